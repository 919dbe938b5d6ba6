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
		"--custos-uid", uid, "--postgres-uid", uid, "--collector-uid", uid, "--envoy-uid", uid}
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
	// Envoy's client certificate, for custos' gRPC listener.
	pair, err := tls.X509KeyPair(read("envoy/tls.crt"), read("envoy/tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("envoy client certificate: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("envoy's client certificate also serves")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != envoyClientURI || leaf.Subject.CommonName != "envoy" {
		t.Errorf("envoy client certificate names %v %q", leaf.URIs, leaf.Subject.CommonName)
	}
	for _, p := range []string{"envoy", "envoy/tls.key"} {
		want := os.FileMode(0o700)
		if p != "envoy" {
			want = 0o600
		}
		if fi, err := os.Stat(filepath.Join(s, p)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v", p, fi.Mode(), err)
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
	// A volume of an older stack, without Envoy's certificate: a new CA
	// issues everything again.
	if err := os.RemoveAll(filepath.Join(s, "envoy")); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), args, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ca, read("tls/ca.crt")) || bytes.Equal(key, read("custos/tls.key")) {
		t.Error("a missing Envoy certificate did not reissue the set")
	}
	roots = x509.NewCertPool()
	roots.AppendCertsFromPEM(read("tls/ca.crt"))
	for _, dir := range []string{"custos", "envoy"} {
		pair, err := tls.X509KeyPair(read(dir+"/tls.crt"), read(dir+"/tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s after the reissue: %v", dir, err)
		}
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
