//go:build linux

package pgcluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a process that starts a cluster
// and waits to be killed.
const helperEnv = "CUSTOS_PGCLUSTER_HELPER_DIR"

// TestHelperStartAndBlock is not a test on its own: run by
// TestServerDiesWithParent in a child process, it starts a cluster, prints
// the server's pid and blocks.
func TestHelperStartAndBlock(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		return // only meaningful as the child of TestServerDiesWithParent
	}
	c, err := Start(t.Context(), Options{Dir: dir, Settings: testSettings()})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("pid:", c.cmd.Process.Pid)
	select {}
}

// TestServerDiesWithParent kills the process that started a cluster with
// SIGKILL, so it runs no cleanup, and expects the server to go away.
func TestServerDiesWithParent(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testBaseDir(t), "data")
	child := exec.Command(os.Args[0], "-test.run=^TestHelperStartAndBlock$", "-test.count=1")
	child.Env = append(os.Environ(), helperEnv+"="+dir)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var pid int
	select {
	case line := <-lines:
		p, ok := strings.CutPrefix(line, "pid: ")
		if !ok {
			t.Fatalf("helper: %s", line)
		}
		if pid, err = strconv.Atoi(p); err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("helper did not start a cluster within a minute")
	}
	if alive, _ := processAlive(pid); !alive {
		t.Fatalf("server pid %d not alive while its parent runs", pid)
	}

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if alive, _ := processAlive(pid); !alive {
			break
		}
		if time.Now().After(deadline) {
			_ = killTree(pid)
			t.Fatalf("server pid %d still alive 15s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It shut down cleanly: no lock file left behind.
	if _, err := os.Stat(filepath.Join(dir, pidFile)); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid after parent death: %v, want a clean shutdown", err)
	}
}

func TestChildPIDs(t *testing.T) {
	t.Parallel()
	sh := exec.Command("sh", "-c", "sleep 60 & sleep 60 & wait")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = killTree(sh.Process.Pid); _ = sh.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	var children []int
	for len(children) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		children = childPIDs(sh.Process.Pid)
	}
	if len(children) != 2 {
		t.Fatalf("childPIDs = %v, want the two sleeps", children)
	}
	if err := killTree(sh.Process.Pid); err != nil {
		t.Fatal(err)
	}
	for _, pid := range children {
		for !gone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("child %d still running after killTree", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// gone reports whether pid has exited (a zombie not yet reaped counts).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && strings.HasPrefix(string(b[i+1:]), " Z ")
}
