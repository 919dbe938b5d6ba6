package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/internal/discover"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func TestDiscoverCommand(t *testing.T) {
	t.Parallel()
	cl, res := pgfiltertest.Upstream(t)
	ctx := context.Background()
	if err := cl.Exec(ctx, res.Database, `CREATE TABLE IF NOT EXISTS discover_cmd_notes (id int, body text);
		INSERT INTO discover_cmd_notes SELECT 1, 'card 6011111111111117 on file' WHERE NOT EXISTS (SELECT FROM discover_cmd_notes);
		GRANT SELECT ON discover_cmd_notes TO `+res.User); err != nil {
		t.Fatal(err)
	}

	t.Run("dsn, text", func(t *testing.T) {
		t.Parallel()
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{"discover", "--dsn", cl.DSN(res.Database)}, &out, &errOut); err != nil {
			t.Fatalf("%v: %s", err, errOut.String())
		}
		for _, want := range []string{"public.discover_cmd_notes  body", "public.cards", "public.customers"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
		if strings.Contains(out.String(), "6011111111111117") {
			t.Fatalf("the report shows a card number:\n%s", out.String())
		}
	})

	t.Run("config, json", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := filepath.Join(dir, "custos.yaml")
		yaml := fmt.Sprintf(`listeners:
  postgres: {address: "127.0.0.1:0"}
oidc:
  issuers: [{url: "https://issuer.example", audiences: [custos]}]
resources:
  - name: payments-db
    type: postgres
    address: %q
    database: %q
    user: %q
    password: {file: %q}
    tls: {mode: verify-full, ca_file: %q}
    labels: {pci: cde}
  - name: other
    type: postgres
    address: 127.0.0.1:1
    database: x
    user: x
    password: {env: NOPE}
`, res.Address, res.Database, res.User, res.Password.File, res.TLS.CAFile)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{"discover", "--config", cfg, "--format", "json", "--rows", "50"}, &out, &errOut); err != nil {
			t.Fatalf("%v: %s", err, errOut.String())
		}
		var reps []discover.Report
		if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		// Only the cardholder-data resource is sampled, with the gateway's own role.
		if len(reps) != 1 || reps[0].Resource != "payments-db" {
			t.Fatalf("reports: %+v", reps)
		}
		ok := false
		for _, c := range reps[0].Found {
			ok = ok || c.Table == "public.discover_cmd_notes" && c.Column == "body" && c.Hits == 1
		}
		if !ok {
			t.Fatalf("found: %+v", reps[0].Found)
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{}, {"--dsn", "x", "--config", "y"}, {"--dsn", "x", "--format", "xml"}} {
			var out, errOut bytes.Buffer
			if err := run(ctx, append([]string{"discover"}, args...), &out, &errOut); err == nil {
				t.Errorf("discover %v: no error", args)
			}
		}
	})
}
