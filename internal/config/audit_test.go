package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuditDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	au := c.Audit
	if !au.IsEnabled() || !au.IsFailClosed() || au.Enabled == nil || au.FailClosed == nil {
		t.Errorf("enabled %v fail_closed %v, want both true and set", au.IsEnabled(), au.IsFailClosed())
	}
	if au.CheckpointInterval != DefaultAuditCheckpointInterval || au.SegmentBytes != DefaultAuditSegmentBytes {
		t.Errorf("checkpoint interval %v, segment bytes %d", au.CheckpointInterval, au.SegmentBytes)
	}
	if au.CommitDelay == nil || *au.CommitDelay != DefaultAuditCommitDelay || au.SyncInterval == nil || *au.SyncInterval != DefaultAuditSyncInterval {
		t.Errorf("commit delay %v, sync interval %v", au.CommitDelay, au.SyncInterval)
	}
	if au.SigningKeyFile != "" || au.HMACKey != nil || au.Export.OTLP != nil {
		t.Errorf("keys and export should stay unset: %+v", au)
	}
	var zero Audit
	if !zero.IsEnabled() || !zero.IsFailClosed() {
		t.Error("an unset audit section must keep the journal and fail closed")
	}
}

func TestAuditOTLPEnabled(t *testing.T) {
	t.Parallel()
	on, off := true, false
	tests := []struct {
		name string
		otlp *bool
		env  map[string]string
		want bool
	}{
		{"no endpoint", nil, nil, false},
		{"endpoint", nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, true},
		{"logs endpoint", nil, map[string]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://collector:4318/v1/logs"}, true},
		{"traces endpoint only", nil, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4317"}, false},
		{"explicit off", &off, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, false},
		{"explicit on", &on, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := AuditExport{OTLP: tt.otlp}
			if got := e.OTLPEnabled(func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("OTLPEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAuditValidation(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "signing.key")
	if err := os.WriteFile(keyFile, []byte("PRIVATE+KEY+x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cde := strings.Replace(validYAML, "    password: {env: PAYMENTS_DB_PASSWORD}\n",
		"    password: {env: PAYMENTS_DB_PASSWORD}\n    labels: {pci: cde}\n", 1)
	tests := []struct{ name, yaml, section, want string }{
		{"short checkpoint interval", validYAML, "audit: {checkpoint_interval: 10ms}", "audit.checkpoint_interval: must be between 1s and 1h"},
		{"long checkpoint interval", validYAML, "audit: {checkpoint_interval: 2h}", "audit.checkpoint_interval"},
		{"negative commit delay", validYAML, "audit: {commit_delay: -1ms}", "audit.commit_delay: must be between 0 (none) and 100ms"},
		{"long commit delay", validYAML, "audit: {commit_delay: 1s}", "audit.commit_delay"},
		{"long sync interval", validYAML, "audit: {sync_interval: 2s}", "audit.sync_interval: must be between 0"},
		{"small segments", validYAML, "audit: {segment_bytes: 4096}", "audit.segment_bytes: must be at least 1048576"},
		{"hmac key with both sources", validYAML, "audit: {hmac_key: {env: K, file: /k}}", "audit.hmac_key: set exactly one of env or file"},
		{"hmac key without source", validYAML, "audit: {hmac_key: {}}", "audit.hmac_key"},
		{"missing signing key", validYAML, "audit: {signing_key_file: /nonexistent/signing.key}", `audit.signing_key_file: "/nonexistent/signing.key" is not a readable file`},
		{"off with cardholder data", cde, "audit: {enabled: false}", "audit.fail_closed: is true while audit is off: every session on payments-db"},
		{"unknown field", validYAML, "audit: {otlp: true}", "field otlp not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(strings.NewReader(tt.yaml + "\n" + tt.section + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	for _, ok := range []struct{ name, yaml, section string }{
		{"every field", cde, "audit: {enabled: true, signing_key_file: " + keyFile + ", hmac_key: {env: CUSTOS_AUDIT_HMAC_KEY}, checkpoint_interval: 10s, segment_bytes: 1048576, export: {otlp: false}, fail_closed: true, sync_interval: 0s, commit_delay: 0s, replay_rows: 5}"},
		{"no commit delay", validYAML, "audit: {commit_delay: 0s}"},
		{"off without cardholder data", validYAML, "audit: {enabled: false}"},
		{"off, fail open", cde, "audit: {enabled: false, fail_closed: false}"},
	} {
		c, err := Parse(strings.NewReader(ok.yaml + "\n" + ok.section + "\n"))
		if err != nil {
			t.Errorf("%s: %v", ok.name, err)
			continue
		}
		if ok.name == "every field" && (c.Audit.CheckpointInterval.Seconds() != 10 || c.Audit.Export.OTLPEnabled(os.Getenv) ||
			c.Audit.CommitDelay == nil || *c.Audit.CommitDelay != 0 || c.Audit.ReplayRows != 5) {
			t.Errorf("%s: %+v", ok.name, c.Audit)
		}
	}
}
