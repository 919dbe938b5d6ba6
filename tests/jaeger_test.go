package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Jaeger for the end-to-end tests: the version pinned as a tool in
// tools/jaeger/go.mod, built once into a cache the test runs share
// ($(go env GOCACHE)/../custos-jaeger/VERSION/jaeger, or
// CUSTOS_JAEGER_BIN when set) and started per test with
// testdata/jaeger.yaml on free loopback ports.
const (
	jaegerModule  = "github.com/jaegertracing/jaeger"
	jaegerPackage = jaegerModule + "/cmd/jaeger"
	jaegerToolDir = "../tools/jaeger"
	// jaegerBuildTimeout bounds a cold build: Jaeger is a large program
	// and a 2-core machine takes several minutes.
	jaegerBuildTimeout = 20 * time.Minute
	// jaegerStartTimeout bounds the wait for the query API.
	jaegerStartTimeout = time.Minute
)

// jaegerVersion reads the pinned version from tools/jaeger/go.mod.
func jaegerVersion(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(jaegerToolDir, "go.mod"))
	if err != nil {
		t.Fatalf("jaeger tool module: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == jaegerModule {
			return f[1]
		}
		if len(f) >= 3 && f[0] == "require" && f[1] == jaegerModule {
			return f[2]
		}
	}
	t.Fatalf("%s/go.mod does not require %s", jaegerToolDir, jaegerModule)
	return ""
}

// goCommand finds the go command.
func goCommand(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(p); os.Getenv("GOROOT") == "" || err != nil {
		t.Fatal("the go command is not in PATH and GOROOT does not name it: Jaeger cannot be built")
	}
	return p
}

// jaegerBinary returns the cached Jaeger binary, building it first when it
// is missing. Concurrent test processes wait for one build (a lock file
// next to the binary).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CUSTOS_JAEGER_BIN"); p != "" {
		return p
	}
	version := jaegerVersion(t)
	goBin := goCommand(t)
	out, err := exec.Command(goBin, "env", "GOCACHE").Output()
	cache := strings.TrimSpace(string(out))
	if err != nil || cache == "" || cache == "off" {
		if cache, err = os.UserCacheDir(); err != nil {
			t.Fatalf("no cache directory for the Jaeger binary: %v", err)
		}
		cache = filepath.Join(cache, "go-build")
	}
	dir := filepath.Join(filepath.Dir(cache), "custos-jaeger", version)
	bin := filepath.Join(dir, "jaeger")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("Jaeger cache: %v", err)
	}
	unlock, err := lockFile(filepath.Join(dir, "build.lock"), jaegerBuildTimeout)
	if err != nil {
		t.Fatalf("Jaeger cache lock: %v", err)
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin // another process built it while we waited
	}
	buildJaeger(t, goBin, bin, version)
	return bin
}

// buildJaeger builds the pinned Jaeger into bin, printing progress: a cold
// build takes minutes.
func buildJaeger(t *testing.T, goBin, bin, version string) {
	t.Helper()
	progress := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		t.Log(msg)
		fmt.Fprintln(os.Stderr, "tests: "+msg)
	}
	progress("building Jaeger %s into %s (once; a cold build takes several minutes)", version, bin)
	// Within the test binary's -timeout, with room to report; what was
	// compiled stays in the build cache for the next run.
	limit := jaegerBuildTimeout
	if d, ok := t.Deadline(); ok && time.Until(d)-30*time.Second < limit {
		limit = time.Until(d) - 30*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, goBin, "build", "-v", "-o", tmp, jaegerPackage)
	cmd.Dir = jaegerToolDir
	cmd.SysProcAttr = devProcAttr()
	cmd.Env = append(os.Environ(), "GOWORK=off")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var tail lockedBuffer
	cmd.Stdout = &tail
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("go build %s: %v", jaegerPackage, err)
	}
	var packages atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			packages.Add(1)
			fmt.Fprintln(&tail, sc.Text())
		}
	}()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	waitErr := make(chan error, 1)
	go func() {
		<-done
		waitErr <- cmd.Wait()
	}()
	for {
		select {
		case <-tick.C:
			progress("still building Jaeger: %s, %d packages", time.Since(start).Round(time.Second), packages.Load())
			continue
		case err = <-waitErr:
		}
		break
	}
	if err != nil {
		if ctx.Err() != nil {
			t.Fatalf("building Jaeger %s took longer than %v (compiled packages are cached: run again, with -timeout 40m as `make test` does); or build it by hand with `cd tools/jaeger && go build -o %s %s`, or set CUSTOS_JAEGER_BIN",
				version, limit.Round(time.Second), bin, jaegerPackage)
		}
		t.Fatalf("building Jaeger %s failed (%v): the end-to-end telemetry test needs it; `cd tools/jaeger && go build %s` shows why. Output ends with:\n%s",
			version, err, jaegerPackage, tail.tail(30))
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatalf("Jaeger cache: %v", err)
	}
	progress("built Jaeger %s in %s", version, time.Since(start).Round(time.Second))
}

// jaeger is a running Jaeger v2.
type jaeger struct {
	// OTLP receivers (host:port) and the query API's base URL.
	otlpGRPC, otlpHTTP, queryURL string
	*devProcess
}

// startJaeger builds (when needed) and starts Jaeger with
// testdata/jaeger.yaml; it is stopped in t.Cleanup.
func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := jaegerBinary(t)
	cfg, err := filepath.Abs(filepath.Join("testdata", "jaeger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	j := &jaeger{}
	j.otlpGRPC, j.otlpHTTP = freeLoopbackAddr(t), freeLoopbackAddr(t)
	query := freeLoopbackAddr(t)
	j.queryURL = "http://" + query
	cmd := exec.Command(bin, "--config", "file:"+cfg)
	cmd.Env = append(os.Environ(),
		"JAEGER_OTLP_GRPC="+j.otlpGRPC, "JAEGER_OTLP_HTTP="+j.otlpHTTP,
		"JAEGER_QUERY_HTTP="+query, "JAEGER_QUERY_GRPC="+freeLoopbackAddr(t))
	j.devProcess = startProcess(t, "Jaeger", cmd, 15*time.Second)
	deadline := time.Now().Add(jaegerStartTimeout)
	for {
		select {
		case <-j.done:
			t.Fatalf("Jaeger exited (%v) before serving; its output ends with:\n%s", j.err, j.out.tail(30))
		default:
		}
		if code, _, err := j.get("/api/services"); err == nil && code == http.StatusOK && j.listening(j.otlpGRPC) && j.listening(j.otlpHTTP) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger not serving within %v; its output ends with:\n%s", jaegerStartTimeout, j.out.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (j *jaeger) listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// get fetches a query API path.
func (j *jaeger) get(path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.queryURL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, body, nil
}

// errLockTimeout: another process held the build lock too long.
var errLockTimeout = errors.New("timed out waiting for the lock")
