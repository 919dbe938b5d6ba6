package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestApprovalsDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	ap := c.Approvals
	if ap.Store != StoreSQLite || ap.SQLitePath != filepath.Join(c.DataDir, "approvals.db") {
		t.Errorf("store = %q at %q, want sqlite in the data dir", ap.Store, ap.SQLitePath)
	}
	if ap.Replica == "" || ap.SweepInterval != DefaultSweepInterval {
		t.Errorf("replica %q sweep %v", ap.Replica, ap.SweepInterval)
	}
}

func TestApprovalsValidation(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, section, want string }{
		{"unknown store", "approvals: {store: redis}", `approvals.store: must be sqlite or postgres, not "redis"`},
		{"postgres without dsn", "approvals: {store: postgres}", "approvals.postgres_dsn: is required by store postgres"},
		{"dsn with sqlite", "approvals: {postgres_dsn: {env: X}}", "approvals.postgres_dsn: is only used by store postgres"},
		{"bad public url", "approvals: {public_url: 'ftp://x'}", "approvals.public_url"},
		{"bad webhook url", "approvals: {webhooks: [{url: 'nope'}]}", "approvals.webhooks[0].url"},
		{"bad webhook format", "approvals: {webhooks: [{url: 'https://hooks.example.com/x', format: teams}]}", "approvals.webhooks[0].format: must be json or slack"},
		{"negative sweep", "approvals: {sweep_interval: -1s}", "approvals.sweep_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(strings.NewReader(validYAML + "\n" + tt.section + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	ok := validYAML + "\napprovals: {store: postgres, postgres_dsn: {env: CUSTOS_APPROVALS_DSN}, public_url: 'https://custos.example.com', webhooks: [{url: 'https://hooks.example.com/x', format: slack}]}\n"
	if _, err := Parse(strings.NewReader(ok)); err != nil {
		t.Fatalf("valid approvals section: %v", err)
	}
}
