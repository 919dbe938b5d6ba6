package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validYAML = `
listeners:
  postgres:
    address: 127.0.0.1:6543
oidc:
  issuers:
    - url: https://issuer.example.com
      audiences: [custos]
resources:
  - name: payments-db
    address: 127.0.0.1:5432
    database: payments
    user: custos_gateway
    password: {env: PAYMENTS_DB_PASSWORD}
`

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.Postgres.PasswordTransport != TransportTLSOrLoopback {
		t.Errorf("password transport = %q", c.Listeners.Postgres.PasswordTransport)
	}
	if c.Sessions.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("idle timeout = %v", c.Sessions.IdleTimeout)
	}
	is := c.OIDC.Issuers[0]
	if is.GroupsClaim != "groups" || is.UserClaim != "sub" || len(is.Algorithms) == 0 {
		t.Errorf("issuer defaults = %+v", is)
	}
	if c.Resources[0].TLS.Mode != "verify-full" || c.Resources[0].Type != "postgres" {
		t.Errorf("resource defaults = %+v", c.Resources[0])
	}
}

func TestValidateNamesFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, edit, old, want string
	}{
		{"missing pg address", "address: 127.0.0.1:6543", "address: ''", "listeners.postgres.address: is required"},
		{"bad pg address", "address: 127.0.0.1:6543", "address: nope", "listeners.postgres.address: \"nope\" is not host:port"},
		{"no audience", "audiences: [custos]", "audiences: []", "oidc.issuers[0].audiences"},
		{"alg none", "audiences: [custos]", "audiences: [custos]\n      algorithms: [none]", "oidc.issuers[0].algorithms[0]: \"none\" is not allowed"},
		{"hs256", "audiences: [custos]", "audiences: [custos]\n      algorithms: [RS256, HS256]", "oidc.issuers[0].algorithms[1]"},
		{"issuer not url", "url: https://issuer.example.com", "url: issuer", "oidc.issuers[0].url"},
		{"no password source", "password: {env: PAYMENTS_DB_PASSWORD}", "password: {}", "resources[0].password: set exactly one of env or file"},
		{"bad tls mode", "user: custos_gateway", "user: custos_gateway\n    tls: {mode: prefer}", "resources[0].tls.mode"},
		{"transport tls without cert", "address: 127.0.0.1:6543", "address: 127.0.0.1:6543\n    password_transport: tls", "listeners.postgres.password_transport"},
		{"unknown field", "listeners:", "listenerz:", "field listenerz not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			y := strings.Replace(validYAML, tt.edit, tt.old, 1)
			_, err := Parse(strings.NewReader(y))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSecretRead(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := (Secret{File: f}).Read(); err != nil || v != "s3cret" {
		t.Errorf("file secret = %q, %v", v, err)
	}
	t.Setenv("CUSTOS_TEST_SECRET", "from-env")
	if v, err := (Secret{Env: "CUSTOS_TEST_SECRET"}).Read(); err != nil || v != "from-env" {
		t.Errorf("env secret = %q, %v", v, err)
	}
	if _, err := (Secret{Env: "CUSTOS_TEST_UNSET_SECRET"}).Read(); err == nil {
		t.Error("unset env secret read")
	}
	if s := (Secret{Env: "X"}).String(); s != "env:X" {
		t.Errorf("String = %q", s)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	t.Parallel()
	if _, err := Load("../../custos.example.yaml"); err != nil {
		t.Fatal(err)
	}
}
