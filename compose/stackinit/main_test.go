package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestInit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	uid := strconv.Itoa(os.Getuid())
	args := []string{"init", "--secrets", filepath.Join(dir, "secrets"), "--probe", filepath.Join(dir, "probe"), "--audit", filepath.Join(dir, "audit"),
		"--custos-uid", uid, "--postgres-uid", uid, "--collector-uid", uid}
	if err := run(context.Background(), args, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	s := filepath.Join(dir, "secrets")
	read := func(rel string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(s, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(read("tls/ca.crt")) {
		t.Fatal("ca.crt holds no certificate")
	}
	for _, tc := range []struct{ dir, host string }{
		{"custos", "custos"}, {"custos", "localhost"}, {"custos", "127.0.0.1"}, {"postgres", "postgres"},
	} {
		pair, err := tls.X509KeyPair(read(tc.dir+"/tls.crt"), read(tc.dir+"/tls.key"))
		if err != nil {
			t.Fatalf("%s: %v", tc.dir, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host}); err != nil {
			t.Errorf("%s certificate for %s: %v", tc.dir, tc.host, err)
		}
		fi, err := os.Stat(filepath.Join(s, tc.dir, "tls.key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s/tls.key: mode %v, %v", tc.dir, fi.Mode(), err)
		}
		if fi, err := os.Stat(filepath.Join(s, tc.dir)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, %v", tc.dir, fi.Mode(), err)
		}
	}
	gw := read("postgres/gateway-password")
	if len(gw) < 32 || !bytes.Equal(gw, read("custos/gateway-password")) {
		t.Errorf("gateway passwords differ or are short")
	}
	if bytes.Equal(gw, read("postgres/superuser-password")) {
		t.Error("the superuser shares the gateway's password")
	}
	if fi, err := os.Stat(filepath.Join(dir, "probe", "stackinit")); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("probe not installed: %v", err)
	}

	// A second run (a restart of the stack) keeps everything.
	ca, key := read("tls/ca.crt"), read("custos/tls.key")
	if err := run(context.Background(), args, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, read("tls/ca.crt")) || !bytes.Equal(key, read("custos/tls.key")) || !bytes.Equal(gw, read("custos/gateway-password")) {
		t.Error("a second run changed the secrets")
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := run(ctx, []string{"probe", srv.URL + "/readyz"}, &bytes.Buffer{}); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := run(ctx, []string{"probe", srv.URL + "/other"}, &bytes.Buffer{}); err == nil {
		t.Error("503 counts as healthy")
	}
	srv.Close()
	if err := run(ctx, []string{"probe", srv.URL + "/readyz"}, &bytes.Buffer{}); err == nil {
		t.Error("a closed server counts as healthy")
	}
	if err := run(ctx, []string{"nope"}, &bytes.Buffer{}); err == nil {
		t.Error("an unknown command succeeds")
	}
}
