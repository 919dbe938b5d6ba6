package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// stmt is a statement as internal/sqlclass reports it, read-only unless the
// fields say otherwise.
func stmt(fields map[string]any) map[string]any {
	s := map[string]any{
		"command": "SELECT", "ddl": false, "read_only": true, "reads": []string{}, "writes": []string{},
		"functions": []string{}, "flags": []string{}, "columns": []any{}, "settings": []string{},
	}
	for k, v := range fields {
		s[k] = v
	}
	return s
}

func col(table, column string, usage ...string) map[string]any {
	return map[string]any{"table": table, "column": column, "usage": usage}
}

func sqlInput(groups []string, stmts ...map[string]any) *Input {
	return &Input{
		Version: 1,
		Kind:    KindSQL,
		Principal: Principal{
			Sub: "agent-7", Iss: "https://issuer.example", Groups: groups,
			Claims: map[string]any{"jti": "j1"},
		},
		Session:  Session{ID: "s1", ClientAddress: "10.0.0.9", ApplicationName: "psql", Database: "payments"},
		Resource: Resource{Name: "payments-db", Type: "postgres", Labels: map[string]string{"pci": "cde"}},
		SQL:      &SQL{Normalized: "SELECT 1", Fingerprint: "f1", Statements: stmts},
	}
}

var (
	agents = []string{"agents"}
	dbas   = []string{"dba"}
)

// newEngine starts an engine. Unless a test sets a timeout, evaluations get
// ten seconds: tests run in parallel, under the race detector, on busy
// machines, and only TestTimeoutDenies is about timeouts.
func newEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	e, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// writePolicy replaces dir's files with files.
func writePolicy(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	// Replace the directory's contents as an editor or a ConfigMap update
	// does, file by file atomically (a hidden temporary file renamed into
	// place), so that a watcher never sees a half-written or empty policy.
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(filepath.Dir(p), ".writing-"+filepath.Base(p))
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, keep := files[e.Name()]; keep || e.IsDir() && keepsDir(files, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

// keepsDir reports whether one of files lies under the directory dir.
func keepsDir(files map[string]string, dir string) bool {
	for name := range files {
		if strings.HasPrefix(name, dir+"/") {
			return true
		}
	}
	return false
}

func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writePolicy(t, dir, files)
	return dir
}

// constPolicy allows or denies everything with the given reason.
func constPolicy(allow bool, reason string) map[string]string {
	return map[string]string{"p.rego": fmt.Sprintf("package custos\n\ndecision := {\"allow\": %t, \"reasons\": [%q]}\n", allow, reason)}
}

var decisionID = regexp.MustCompile(`^dec_[0-9a-f]{16}$`)

func TestEmbeddedDefaultLoads(t *testing.T) {
	t.Parallel()
	e, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.opts.Timeout != DefaultTimeout || e.opts.CacheEntries != DefaultCacheEntries || e.opts.WatchInterval != DefaultWatchInterval {
		t.Errorf("defaults: %+v", e.opts)
	}
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(e.Version()) {
		t.Errorf("Version() = %q, want 12 hex digits", e.Version())
	}
	d := e.Decide(context.Background(), &Input{Kind: KindConnection, Principal: Principal{Sub: "a", Groups: agents}})
	if !d.Allow || d.PolicyVersion != e.Version() || !decisionID.MatchString(d.ID) {
		t.Errorf("connection decision = %+v", d)
	}
	// Watch has nothing to watch.
	done := make(chan struct{})
	go func() { e.Watch(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch of the embedded policy did not return")
	}
}

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{CacheEntries: -1})
	approval := &Approval{ApproverGroups: []string{"dba"}, Quorum: 1, TTL: "15m"}
	cardsMask := &Mask{
		Columns:   map[string]string{"pan": "last4", "cvv": "drop", "track_data": "drop"},
		JSONPaths: map[string]string{}, DetectPAN: true, Reveal: "last4",
	}
	plainMask := &Mask{Columns: map[string]string{}, JSONPaths: map[string]string{}, DetectPAN: true, Reveal: "last4"}
	httpMask := &Mask{
		Columns:   map[string]string{},
		JSONPaths: map[string]string{"$..pan": "last4", "$..cvv": "drop", "$..track_data": "drop"}, DetectPAN: true, Reveal: "last4",
	}
	tests := []struct {
		name     string
		in       *Input
		outcome  Outcome
		reasons  []string
		approval *Approval
		mask     *Mask
	}{
		{
			name:    "agent reads a plain table",
			in:      sqlInput(agents, stmt(map[string]any{"reads": []string{"public.orders"}})),
			outcome: OutcomeAllow, reasons: []string{"read-only statements are allowed for agent"}, mask: plainMask,
		},
		{
			name: "agent selects the PAN",
			in: sqlInput(agents, stmt(map[string]any{
				"reads": []string{"public.cards"}, "columns": []any{col("public.cards", "pan", "output")},
			})),
			outcome: OutcomeAllow, reasons: []string{"read-only statements are allowed for agent"}, mask: cardsMask,
		},
		{
			name: "agent filters on the PAN",
			in: sqlInput(agents, stmt(map[string]any{
				"reads": []string{"public.cards"}, "columns": []any{col("public.cards", "pan", "output", "filter")},
			})),
			outcome: OutcomeDeny, reasons: []string{"column public.cards.pan may only be selected, not used in filter"},
		},
		{
			name:    "agent inserts",
			in:      sqlInput(agents, stmt(map[string]any{"command": "INSERT", "read_only": false, "writes": []string{"public.orders"}})),
			outcome: OutcomeApprove, reasons: []string{"writes to public.orders require approval from dba"},
			approval: approval, mask: plainMask,
		},
		{
			name: "agent runs a prepared write",
			in: sqlInput(agents, stmt(map[string]any{"command": "EXECUTE", "read_only": false,
				"prepared": stmt(map[string]any{"command": "DELETE", "read_only": false, "writes": []string{"public.cards"}})})),
			outcome: OutcomeApprove, reasons: []string{"writes to public.cards require approval from dba"},
			approval: approval, mask: cardsMask,
		},
		{
			name:    "agent creates a table",
			in:      sqlInput(agents, stmt(map[string]any{"command": "CREATE TABLE", "ddl": true, "read_only": false})),
			outcome: OutcomeDeny, reasons: []string{"DDL (CREATE TABLE) is not allowed for agents"},
		},
		{
			name:    "agent calls lo_open by FunctionCall",
			in:      sqlInput(agents, stmt(map[string]any{"command": "FUNCTION CALL", "read_only": false, "functions": []string{"lo_open"}, "flags": []string{"side_effect_function"}})),
			outcome: OutcomeDeny, reasons: []string{"function call lo_open (not in function_call_allowlist) is not allowed for agents"},
		},
		{
			name:    "dba creates a table",
			in:      sqlInput(dbas, stmt(map[string]any{"command": "CREATE TABLE", "ddl": true, "read_only": false})),
			outcome: OutcomeApprove, reasons: []string{"DDL (CREATE TABLE) requires approval from another member of dba"},
			approval: approval, mask: plainMask,
		},
		{
			name:    "unknown group",
			in:      sqlInput([]string{"sales"}, stmt(nil)),
			outcome: OutcomeDeny, reasons: []string{`principal "agent-7" is in none of the groups agents, dba`},
		},
		{
			name:    "no groups",
			in:      sqlInput(nil, stmt(nil)),
			outcome: OutcomeDeny, reasons: []string{`principal "agent-7" is in none of the groups agents, dba`},
		},
		{
			name: "statements as raw JSON",
			in: func() *Input {
				in := sqlInput(agents)
				in.SQL.Statements = json.RawMessage(`[{"command":"TRUNCATE","read_only":false,"writes":["public.cards"]}]`)
				return in
			}(),
			outcome: OutcomeApprove, reasons: []string{"writes to public.cards require approval from dba"},
			approval: approval, mask: cardsMask,
		},
		{
			name:    "connection",
			in:      &Input{Version: 1, Kind: KindConnection, Principal: Principal{Sub: "a", Groups: agents}},
			outcome: OutcomeAllow, reasons: []string{"agent may connect"},
		},
		{
			name:    "version filled in",
			in:      &Input{Kind: KindConnection, Principal: Principal{Sub: "a", Groups: dbas}},
			outcome: OutcomeAllow, reasons: []string{"dba may connect"},
		},
		{
			name:    "http read",
			in:      &Input{Version: 1, Kind: KindHTTP, Principal: Principal{Sub: "a", Groups: agents}, HTTP: &HTTP{Method: "GET", Path: "/v1/cards"}},
			outcome: OutcomeAllow, reasons: []string{"GET requests are allowed for agent"},
			mask: httpMask,
		},
		{
			name:    "http write",
			in:      &Input{Version: 1, Kind: KindHTTP, Principal: Principal{Sub: "a", Groups: agents}, HTTP: &HTTP{Method: "POST", Path: "/v1/refunds"}},
			outcome: OutcomeApprove, reasons: []string{"POST requests require approval from dba"},
			approval: approval, mask: httpMask,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := e.Decide(context.Background(), tt.in)
			if got := d.Outcome(); got != tt.outcome {
				t.Errorf("outcome = %s, want %s (%+v)", got, tt.outcome, d)
			}
			if !equalJSON(d.Reasons, tt.reasons) {
				t.Errorf("reasons = %q, want %q", d.Reasons, tt.reasons)
			}
			if !equalJSON(d.RequireApproval, tt.approval) {
				t.Errorf("require_approval = %+v, want %+v", d.RequireApproval, tt.approval)
			}
			if tt.outcome != OutcomeDeny && !equalJSON(d.Mask, tt.mask) {
				t.Errorf("mask = %+v, want %+v", d.Mask, tt.mask)
			}
			if d.Cached || d.PolicyVersion != e.Version() || !decisionID.MatchString(d.ID) {
				t.Errorf("decision = %+v", d)
			}
		})
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestPolicyErrorsDeny(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		rego   string
		reason string
	}{
		{"undefined", `decision := {"allow": true} if input.kind == "nothing"`, "policy error: " + Query + " is undefined"},
		{"conflicting outputs", "decision := {\"allow\": true} if input.kind\ndecision := {\"allow\": false} if input.kind", "policy error: evaluation failed: "},
		{"builtin error", `decision := {"allow": true, "reasons": [sprintf("%d", input.kind)]} if input.kind`, "policy error: evaluation failed: "},
		{"not an object", `decision := "yes"`, "policy error: malformed decision: json: cannot unmarshal"},
		{"no allow", `decision := {"reasons": []}`, "policy error: malformed decision: no allow field"},
		{"allow not a boolean", `decision := {"allow": "true"}`, "policy error: malformed decision: json: cannot unmarshal"},
		{"unknown field", `decision := {"allow": true, "requires_approval": {}}`, `policy error: malformed decision: json: unknown field "requires_approval"`},
		{"unknown strategy", `decision := {"allow": true, "mask": {"columns": {"pan": "rot13"}}}`, `policy error: malformed decision: mask.columns["pan"]: unknown strategy "rot13"`},
		{"unknown json path strategy", `decision := {"allow": true, "mask": {"json_paths": {"$.pan": "show"}}}`, `policy error: malformed decision: mask.json_paths["$.pan"]: unknown strategy "show"`},
		{"empty column", `decision := {"allow": true, "mask": {"columns": {"": "drop"}}}`, `policy error: malformed decision: mask.columns has an empty key`},
		{"bad reveal", `decision := {"allow": true, "mask": {"reveal": "all"}}`, `policy error: malformed decision: mask.reveal "all" is not last4 or bin_last4`},
		{"negative quorum", `decision := {"allow": true, "require_approval": {"approver_groups": ["dba"], "quorum": -1, "ttl": "15m"}}`, "policy error: malformed decision: require_approval.quorum must be at least 1, not -1"},
		{"zero quorum", `decision := {"allow": true, "require_approval": {"approver_groups": ["dba"], "quorum": 0, "ttl": "15m"}}`, "policy error: malformed decision: require_approval.quorum must be at least 1, not 0"},
		{"no quorum", `decision := {"allow": true, "require_approval": {"approver_groups": ["dba"], "ttl": "15m"}}`, "policy error: malformed decision: require_approval.quorum must be at least 1, not missing"},
		{"fractional quorum", `decision := {"allow": true, "require_approval": {"approver_groups": ["dba"], "quorum": 1.5, "ttl": "15m"}}`, "policy error: malformed decision: json: cannot unmarshal"},
		{"no approvers", `decision := {"allow": true, "require_approval": {"approver_groups": [], "quorum": 1, "ttl": "15m"}}`, "policy error: malformed decision: require_approval.approver_groups is empty"},
		{"empty approver", `decision := {"allow": true, "require_approval": {"approver_groups": [""], "quorum": 1, "ttl": "15m"}}`, "policy error: malformed decision: require_approval.approver_groups has an empty name"},
		{"bad ttl", `decision := {"allow": true, "require_approval": {"approver_groups": ["dba"], "quorum": 1, "ttl": "1d"}}`, `policy error: malformed decision: require_approval.ttl "1d" is not a positive duration`},
		{"no ttl", `decision := {"allow": true, "require_approval": {"approver_groups": ["dba"], "quorum": 1}}`, `policy error: malformed decision: require_approval.ttl is missing`},
		{"approval on a denial", `decision := {"allow": false, "require_approval": {"approver_groups": ["dba"], "quorum": 1, "ttl": "15m"}}`, "policy error: malformed decision: require_approval on a denial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			reg := prometheus.NewRegistry()
			e := newEngine(t, Options{
				Dir:        policyDir(t, map[string]string{"p.rego": "package custos\n\n" + tt.rego + "\n"}),
				Logger:     slog.New(slog.NewJSONHandler(&logs, nil)),
				Registerer: reg,
			})
			in := sqlInput(agents, stmt(nil))
			for i := range 2 { // the second time would be a cache hit: errors are not cached
				d := e.Decide(context.Background(), in)
				if d.Allow || d.Cached || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], tt.reason) {
					t.Fatalf("decision %d = %+v, want a denial with reason %q…", i, d, tt.reason)
				}
				if !decisionID.MatchString(d.ID) || d.PolicyVersion != e.Version() {
					t.Errorf("decision %d = %+v", i, d)
				}
				if !strings.Contains(logs.String(), d.ID) || !strings.Contains(logs.String(), `"level":"ERROR"`) {
					t.Errorf("log does not name %s at ERROR: %s", d.ID, logs.String())
				}
			}
			if got := counterValue(t, e.metrics.decisions.WithLabelValues("deny", "false")); got != 2 {
				t.Errorf("deny decisions = %v, want 2", got)
			}
		})
	}
}

func TestDenialWithoutReasonGetsOne(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{Dir: policyDir(t, map[string]string{"p.rego": "package custos\n\ndecision := {\"allow\": false}\n"})})
	d := e.Decide(context.Background(), sqlInput(agents))
	if d.Allow || !equalJSON(d.Reasons, []string{"denied by policy"}) {
		t.Errorf("decision = %+v", d)
	}
}

func TestNilInputDenied(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{Dir: policyDir(t, constPolicy(true, "all"))})
	d := e.Decide(context.Background(), nil)
	if d.Allow || !equalJSON(d.Reasons, []string{"policy error: no input"}) {
		t.Errorf("decision = %+v", d)
	}
}

func TestUnmarshalableStatementsDenied(t *testing.T) {
	t.Parallel()
	for _, entries := range []int{-1, 0} {
		e := newEngine(t, Options{Dir: policyDir(t, constPolicy(true, "all")), CacheEntries: entries})
		in := sqlInput(agents)
		in.SQL.Statements = func() {}
		d := e.Decide(context.Background(), in)
		if d.Allow || !strings.HasPrefix(d.Reasons[0], "policy error: ") {
			t.Errorf("cache entries %d: decision = %+v", entries, d)
		}
	}
}

func TestMalformedStatementsDenied(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{})
	tests := []struct {
		name       string
		statements any
		reason     string
	}{
		// []byte marshals as a base64 string, not as the JSON it holds.
		{"bytes", []byte(`[{"command":"DELETE"}]`), "sql.statements is not an array of statements"},
		{"string", "DELETE FROM cards", "sql.statements is not an array of statements"},
		{"statement not an object", []any{"DELETE FROM cards"}, "policy error: evaluation failed: "},
		{"nesting too deep", []any{stmt(map[string]any{"command": "EXPLAIN", "flags": []string{"explain_analyze"},
			"explains": stmt(map[string]any{"command": "EXECUTE", "prepared": stmt(map[string]any{"command": "EXPLAIN",
				"explains": stmt(map[string]any{"command": "EXPLAIN", "explains": stmt(nil)})})})})},
			"statements nested more than three levels deep are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := sqlInput(agents)
			in.SQL.Statements = tt.statements
			d := e.Decide(context.Background(), in)
			if d.Allow || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], tt.reason) {
				t.Errorf("decision = %+v, want a denial for %q", d, tt.reason)
			}
		})
	}
}

func TestTimeoutDenies(t *testing.T) {
	t.Parallel()
	slow := `package custos

decision := {"allow": true} if slow

slow if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`
	e := newEngine(t, Options{Dir: policyDir(t, map[string]string{"slow.rego": slow}), Timeout: 50 * time.Millisecond})
	start := time.Now()
	d := e.Decide(context.Background(), sqlInput(agents))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Decide took %s with a 50ms timeout", took)
	}
	if d.Allow || !equalJSON(d.Reasons, []string{"policy error: evaluation did not finish within 50ms"}) {
		t.Errorf("decision = %+v", d)
	}
	// A caller that gives up is denied too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d = e.Decide(ctx, sqlInput(agents))
	if d.Allow || !strings.HasPrefix(d.Reasons[0], "policy error: evaluation canceled") {
		t.Errorf("decision with a canceled context = %+v", d)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"syntax error", map[string]string{"p.rego": "package custos\n\ndecision := {\n"}, "p.rego:"},
		{"compile error", map[string]string{"p.rego": "package custos\n\ndecision := x\n"}, "var x is unsafe"},
		{"no decision", map[string]string{"p.rego": "package custos\n\nallow := true\n"}, "no rule defines " + Query},
		{"no modules", map[string]string{"data.json": "{}"}, "no Rego modules"},
		{"only tests", map[string]string{"p_test.rego": "package custos\n\ntest_x if true\n"}, "no Rego modules"},
		{"bad data", map[string]string{"p.rego": "package custos\n\ndecision := {\"allow\": true}\n", "data.json": "{"}, "data.json"},
		{"data not an object", map[string]string{"p.rego": "package custos\n\ndecision := {\"allow\": true}\n", "data.json": "[1]"}, "must be an object"},
		{"data conflict", map[string]string{
			"p.rego": "package custos\n\ndecision := {\"allow\": true}\n",
			"a.json": `{"x": {"y": 1}}`, "b.json": `{"x": {"y": 2}}`,
		}, "conflicting values for data.x.y"},
		{"data conflicts with a rule", map[string]string{
			"p.rego": "package custos\n\ndecision := {\"allow\": true}\n", "data.json": `{"custos": {"decision": 1}}`,
		}, "custos"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(context.Background(), Options{Dir: policyDir(t, tt.files)})
			if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want ErrInvalidPolicy mentioning %q", err, tt.want)
			}
		})
	}
	_, err := New(context.Background(), Options{Dir: filepath.Join(t.TempDir(), "missing")})
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("New on a missing directory: %v", err)
	}
}

func TestDataLayout(t *testing.T) {
	t.Parallel()
	// Data files sit under their directory's path; hidden files and
	// directories, tests and other files are not loaded.
	e := newEngine(t, Options{Dir: policyDir(t, map[string]string{
		"p.rego": `package custos

decision := {"allow": true, "reasons": [data.custos.config.a, data.extra.b, data.nested.deep.c, data.y.d]}
`,
		"data.json":              `{"custos": {"config": {"a": "root"}}}`,
		"extra.json":             `{"extra": {"b": "second root file"}}`,
		"nested/deep/data.yaml":  "c: yaml in nested/deep\n",
		"y/data.json":            `{"d": "under y"}`,
		"y/more.json":            `{"e": "merged"}`,
		".hidden/data.json":      `{"custos": {"config": {"a": "hidden"}}}`,
		".hidden.json":           `{"custos": {"config": {"a": "hidden file"}}}`,
		"p_test.rego":            "package custos\n\ndecision := {\"allow\": false}\n",
		"README.md":              "# not policy\n",
		"nested/deep/ignore.txt": "x",
	})})
	d := e.Decide(context.Background(), sqlInput(agents))
	want := []string{"root", "second root file", "yaml in nested/deep", "under y"}
	if !d.Allow || !equalJSON(d.Reasons, want) {
		t.Errorf("decision = %+v, want reasons %q", d, want)
	}
}

func TestMergeData(t *testing.T) {
	t.Parallel()
	data := map[string]any{}
	steps := []struct {
		dir string
		doc any
		err string
	}{
		{".", map[string]any{"a": map[string]any{"b": 1.0}}, ""},
		{"a", map[string]any{"c": 2.0}, ""},
		{"a/c", 2.0, ""}, // the same value again is no conflict
		{"a/b", 3.0, "conflicting values for data.a.b"},
		{"a/b/x", 3.0, "data.b is not an object"},
		{"z/y/x", "deep", ""},
	}
	for _, s := range steps {
		err := mergeData(data, s.dir, s.doc)
		if (err == nil) != (s.err == "") || (err != nil && !strings.Contains(err.Error(), s.err)) {
			t.Errorf("mergeData(%q) = %v, want %q", s.dir, err, s.err)
		}
	}
	want := map[string]any{
		"a": map[string]any{"b": 1.0, "c": 2.0},
		"z": map[string]any{"y": map[string]any{"x": "deep"}},
	}
	if !equalJSON(data, want) {
		t.Errorf("data = %v, want %v", data, want)
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var mu sync.Mutex
	dir := policyDir(t, constPolicy(true, "version one"))
	e := newEngine(t, Options{Dir: dir, Logger: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))})
	ctx := context.Background()
	in := sqlInput(agents, stmt(nil))
	v1 := e.Version()

	if d := e.Decide(ctx, in); d.Cached {
		t.Fatalf("first decision cached: %+v", d)
	}
	if d := e.Decide(ctx, in); !d.Cached || d.PolicyVersion != v1 {
		t.Fatalf("second decision = %+v, want a cache hit of %s", d, v1)
	}

	// A good policy takes effect at once, with an empty cache.
	writePolicy(t, dir, constPolicy(false, "version two"))
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	v2 := e.Version()
	if v2 == v1 {
		t.Fatalf("version unchanged after a reload of new content: %s", v2)
	}
	d := e.Decide(ctx, in)
	if d.Allow || d.Cached || d.PolicyVersion != v2 || !equalJSON(d.Reasons, []string{"version two"}) {
		t.Fatalf("decision after reload = %+v", d)
	}

	// A broken policy is refused: the error comes back, is logged at
	// Error, and the previous version keeps deciding.
	writePolicy(t, dir, map[string]string{"p.rego": "package custos\n\ndecision := {\n"})
	err := e.Reload(ctx)
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("Reload of a broken policy: %v", err)
	}
	if e.Version() != v2 {
		t.Errorf("version after a failed reload = %s, want %s", e.Version(), v2)
	}
	d = e.Decide(ctx, in)
	if d.Allow || !d.Cached || !equalJSON(d.Reasons, []string{"version two"}) {
		t.Errorf("decision after a failed reload = %+v", d)
	}
	mu.Lock()
	log := logs.String()
	mu.Unlock()
	if !strings.Contains(log, `"level":"ERROR","msg":"policy load failed, previous policy kept"`) ||
		!strings.Contains(log, `"policy_version":"`+v2+`"`) {
		t.Errorf("log of the failed reload:\n%s", log)
	}

	// Reloading unchanged files keeps the version but starts a new cache.
	writePolicy(t, dir, constPolicy(false, "version two"))
	if err := e.Reload(ctx); err != nil || e.Version() != v2 {
		t.Fatalf("Reload of the same files: %v, version %s", err, e.Version())
	}
	if d := e.Decide(ctx, in); d.Cached {
		t.Errorf("decision after reload served from the old cache: %+v", d)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestWatch(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var mu sync.Mutex
	dir := policyDir(t, constPolicy(true, "one"))
	e := newEngine(t, Options{
		Dir: dir, WatchInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	defer func() {
		cancel()
		<-done
	}()
	in := sqlInput(agents, stmt(nil))
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	reasonIs := func(r string) func() bool {
		return func() bool { return equalJSON(e.Decide(ctx, in).Reasons, []string{r}) }
	}

	writePolicy(t, dir, constPolicy(true, "two"))
	waitFor("the change to be loaded", reasonIs("two"))

	// A broken edit is logged once and the policy kept.
	v := e.Version()
	writePolicy(t, dir, map[string]string{"p.rego": "package custos\n\ndecision := {\n"})
	countFailures := func() int {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(logs.String(), "policy load failed")
	}
	waitFor("the broken policy to be refused", func() bool { return countFailures() > 0 })
	time.Sleep(100 * time.Millisecond) // ten more ticks
	if n := countFailures(); n != 1 {
		t.Errorf("broken policy logged %d times, want once", n)
	}
	if e.Version() != v || !reasonIs("two")() {
		t.Errorf("broken policy replaced the working one")
	}

	// Fixing it is picked up, as is a whole new directory tree.
	writePolicy(t, dir, map[string]string{"sub/p.rego": "package custos\n\ndecision := {\"allow\": false, \"reasons\": [\"three\"]}\n"})
	waitFor("the fix to be loaded", reasonIs("three"))

	// A vanished directory keeps the policy.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitFor("the missing directory to be noticed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "policy directory unreadable")
	})
	if !reasonIs("three")() {
		t.Errorf("policy lost with its directory")
	}
}

func TestDecisionIDsUnique(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{Dir: policyDir(t, constPolicy(true, "ok"))})
	seen := map[string]bool{}
	in := sqlInput(agents, stmt(nil))
	for i := range 2000 {
		var d *Decision
		if i%2 == 0 {
			d = e.Decide(context.Background(), in) // cache hits after the first
		} else {
			d = e.Decide(context.Background(), &Input{Kind: KindConnection})
		}
		if !decisionID.MatchString(d.ID) || seen[d.ID] {
			t.Fatalf("decision %d has id %q (seen before: %t)", i, d.ID, seen[d.ID])
		}
		seen[d.ID] = true
	}
}

func TestCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEngine(t, Options{})
	read := func(table string) map[string]any {
		return stmt(map[string]any{"reads": []string{table}, "columns": []any{col(table, "pan", "output")}})
	}
	in := sqlInput(agents, read("public.cards"))
	first := e.Decide(ctx, in)
	hit := e.Decide(ctx, in)
	if first.Cached || !hit.Cached || hit.ID == first.ID || !equalJSON(hit.Mask, first.Mask) ||
		!equalJSON(hit.Reasons, first.Reasons) || hit.PolicyVersion != first.PolicyVersion {
		t.Fatalf("first = %+v, second = %+v", first, hit)
	}

	// What the caller does with a decision does not reach the cache.
	hit.Mask.Columns["pan"] = "bin_last4"
	hit.Reasons[0] = "changed"
	if again := e.Decide(ctx, in); again.Mask.Columns["pan"] != "last4" || again.Reasons[0] == "changed" {
		t.Errorf("cached decision changed through a returned copy: %+v", again)
	}

	// Everything the policy reads is in the key; the session is not.
	variants := map[string]func(*Input){
		"same fingerprint, other schema": func(in *Input) { in.SQL.Statements = []map[string]any{read("archive.cards")} },
		"other groups":                   func(in *Input) { in.Principal.Groups = []string{"dba"} },
		"more groups":                    func(in *Input) { in.Principal.Groups = []string{"agents", "dba"} },
		"other subject":                  func(in *Input) { in.Principal.Sub = "agent-8" },
		"actor":                          func(in *Input) { in.Principal.Act = &Actor{Sub: "alice"} },
		"other resource":                 func(in *Input) { in.Resource.Name = "other-db" },
		"other labels":                   func(in *Input) { in.Resource.Labels = map[string]string{"pci": "none"} },
		"other version":                  func(in *Input) { in.Version = 2 },
		"no sql":                         func(in *Input) { in.SQL = nil },
	}
	for name, change := range variants {
		v := *in
		sqlCopy := *in.SQL
		v.SQL = &sqlCopy
		change(&v)
		if d := e.Decide(ctx, &v); d.Cached {
			t.Errorf("%s: served from the cache: %+v", name, d)
		}
	}
	other := *in
	other.Session = Session{ID: "s2", ClientAddress: in.Session.ClientAddress, ApplicationName: "pgx"}
	other.Principal.Claims = map[string]any{"jti": "j2"}
	other.Principal.Groups = []string{"agents"}
	if d := e.Decide(ctx, &other); !d.Cached {
		t.Errorf("another session of the same principal missed the cache: %+v", d)
	}
	// The default policy's network rule reads the client's address: a
	// decision is cached per address.
	other.Session.ClientAddress = "10.0.0.10"
	if d := e.Decide(ctx, &other); d.Cached {
		t.Errorf("a decision served for another client address: %+v", d)
	}
	// Group order does not matter.
	both := *in
	both.Principal.Groups = []string{"dba", "agents"}
	if d := e.Decide(ctx, &both); !d.Cached {
		t.Errorf("groups in another order missed the cache: %+v", d)
	}

	// Only SQL decisions are cached.
	conn := &Input{Kind: KindConnection, Principal: Principal{Sub: "a", Groups: agents}}
	e.Decide(ctx, conn)
	if d := e.Decide(ctx, conn); d.Cached {
		t.Errorf("connection decision cached: %+v", d)
	}
}

func TestCacheOffAndBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	off := newEngine(t, Options{CacheEntries: -1})
	in := sqlInput(agents, stmt(nil))
	off.Decide(ctx, in)
	if d := off.Decide(ctx, in); d.Cached {
		t.Errorf("cache off, decision cached: %+v", d)
	}
	if off.cur.Load().cache != nil {
		t.Error("cache off, but a cache exists")
	}

	small := newEngine(t, Options{CacheEntries: 2})
	tables := []string{"public.a", "public.b", "public.c"}
	for _, table := range tables {
		small.Decide(ctx, sqlInput(agents, stmt(map[string]any{"reads": []string{table}})))
	}
	if n := small.cur.Load().cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
	// public.a was evicted, the other two are there.
	for _, tt := range []struct {
		table  string
		cached bool
	}{{"public.c", true}, {"public.b", true}, {"public.a", false}} {
		d := small.Decide(ctx, sqlInput(agents, stmt(map[string]any{"reads": []string{tt.table}})))
		if d.Cached != tt.cached {
			t.Errorf("%s: cached = %t, want %t", tt.table, d.Cached, tt.cached)
		}
	}
}

func TestCachePutExisting(t *testing.T) {
	t.Parallel()
	c := newDecisionCache(1)
	k := cacheKey{1}
	c.put(k, &Decision{Reasons: []string{"a"}})
	c.put(k, &Decision{Reasons: []string{"b"}})
	d, ok := c.get(k)
	if !ok || d.Reasons[0] != "b" || c.len() != 1 {
		t.Errorf("get = %+v, %t; len %d", d, ok, c.len())
	}
}

func TestConcurrentDecideDuringReload(t *testing.T) {
	t.Parallel()
	dir := policyDir(t, constPolicy(true, "a"))
	e := newEngine(t, Options{Dir: dir, CacheEntries: 64})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				in := sqlInput(agents, stmt(map[string]any{"reads": []string{fmt.Sprintf("public.t%d", (w+i)%8)}}))
				d := e.Decide(context.Background(), in)
				if r := d.Reasons; len(r) != 1 || (r[0] != "a" && r[0] != "b") || d.Allow != (r[0] == "a") {
					errs <- fmt.Sprintf("decision %+v", d)
					return
				}
				_ = e.Version()
			}
		}()
	}
	for i := range 30 {
		if i%2 == 0 {
			writePolicy(t, dir, constPolicy(false, "b"))
		} else {
			writePolicy(t, dir, constPolicy(true, "a"))
		}
		if err := e.Reload(ctx); err != nil {
			t.Errorf("Reload %d: %v", i, err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEngine(t, Options{Registerer: reg})
	ctx := context.Background()
	in := sqlInput(agents, stmt(nil))
	e.Decide(ctx, in)
	e.Decide(ctx, in)
	e.Decide(ctx, sqlInput(agents, stmt(map[string]any{"command": "INSERT", "read_only": false, "writes": []string{"public.x"}})))
	e.Decide(ctx, nil)
	checks := map[string]float64{
		"allow/false":   counterValue(t, e.metrics.decisions.WithLabelValues("allow", "false")),
		"allow/true":    counterValue(t, e.metrics.decisions.WithLabelValues("allow", "true")),
		"approve/false": counterValue(t, e.metrics.decisions.WithLabelValues("approve", "false")),
		"deny/false":    counterValue(t, e.metrics.decisions.WithLabelValues("deny", "false")),
		"errors/input":  counterValue(t, e.metrics.errors.WithLabelValues("input")),
		"loads/ok":      counterValue(t, e.metrics.reloads.WithLabelValues("ok")),
	}
	for name, got := range checks {
		if got != 1 {
			t.Errorf("%s = %v, want 1", name, got)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "custos_policy_evaluation_seconds" {
			if n := f.GetMetric()[0].GetHistogram().GetSampleCount(); n != 2 {
				t.Errorf("evaluations observed: %d, want 2", n)
			}
			return
		}
	}
	t.Error("no custos_policy_evaluation_seconds")
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestApprovalTTL(t *testing.T) {
	t.Parallel()
	a := &Approval{TTL: "15m"}
	if a.TTLDuration() != 15*time.Minute {
		t.Errorf("TTLDuration = %s", a.TTLDuration())
	}
}
