package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func TestMain(m *testing.M) { pgfiltertest.Main(m) }

func TestRunUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), nil, &out, &errOut); err == nil {
		t.Fatal("no command accepted")
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Fatalf("err = %v", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "custos ") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
}

func TestServeRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "custos.yaml")
	if err := os.WriteFile(cfg, []byte("listeners:\n  postgres:\n    address: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--config", cfg}, &out, &errOut)
	for _, want := range []string{`listeners.postgres.address: "nope" is not host:port`, "oidc.issuers: at least one issuer", "resources: at least one resource"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestTokenNeedsDevIssuer(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	dir := t.TempDir()
	err := run(context.Background(), []string{"token", "--data-dir", dir, "--sub", "alice"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "run `custos dev") {
		t.Fatalf("err = %v", err)
	}
	if err := run(context.Background(), []string{"token", "--data-dir", dir}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--sub is required") {
		t.Fatalf("err = %v", err)
	}
}

// TestServe runs `custos serve` from a config file against a real cluster
// and a real issuer, connects through it, then stops it with the context.
func TestServe(t *testing.T) {
	t.Parallel()
	e := startServe(t, "")
	c, err := pgx.Connect(context.Background(), e.connString("alice", e.token(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}})))
	if err != nil {
		t.Fatal(err)
	}
	var holder string
	if err := c.QueryRow(context.Background(), "SELECT holder FROM cards WHERE id = 1").Scan(&holder); err != nil || holder != "Ada Lovelace" {
		t.Fatalf("holder = %q, %v", holder, err)
	}
	_ = c.Close(context.Background())
	resp, err := http.Get(e.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `custos_pg_connections_total{outcome="established"} 1`) {
		t.Errorf("metrics lack the connection:\n%s", body.String())
	}
	e.stop(t)
	if !strings.Contains(e.errOut.String(), "authentication succeeded") {
		t.Errorf("log lacks the authentication event:\n%s", e.errOut.String())
	}
}

// freeAddr returns a loopback address nothing listens on, never one it
// returned before in this process: a port closed here may be handed out
// again by the next call, and a config naming one port for two
// listeners is refused.
func freeAddr(t *testing.T) string {
	t.Helper()
	freeAddrs.Lock()
	defer freeAddrs.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		if !freeAddrs.given[addr] {
			freeAddrs.given[addr] = true
			return addr
		}
	}
}

var freeAddrs = struct {
	sync.Mutex
	given map[string]bool
}{given: map[string]bool{}}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready", url)
}
