package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// nodeDir holds the client scripts and their npm packages.
const nodeDir = "node"

// nodeResult is what tests/node/harness.js prints.
type nodeResult struct {
	Client string                     `json:"client"`
	OK     bool                       `json:"ok"`
	Checks map[string]json.RawMessage `json:"checks"`
	Failed string                     `json:"failed"`
	Error  string                     `json:"error"`
	Code   string                     `json:"code"`
}

// runNode runs a client script from tests/node against env as user and
// returns its checks. A missing node or missing npm packages fail the test
// with what to run.
func runNode(t *testing.T, env *pgfiltertest.Env, script, user string, packages ...string) map[string]json.RawMessage {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: run `make deps` (scripts/deps.sh installs Node.js and the client packages)")
	}
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", p, "package.json")); err != nil {
			t.Fatalf("npm package %q is missing from tests/node/node_modules: run `make deps` (npm ci in tests/node)", p)
		}
	}
	abs, err := filepath.Abs(filepath.Join(nodeDir, script))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, clientEnviron(
		"CUSTOS_PG_HOST="+env.Host,
		"CUSTOS_PG_PORT="+env.Port,
		"CUSTOS_DATABASE="+pgfiltertest.Database,
		"CUSTOS_USER="+user,
		"CUSTOS_TOKEN="+env.Token(t, user, "agents"),
		"CUSTOS_CA_FILE="+env.CertFile,
		"NODE_PATH="+filepath.Join(filepath.Dir(abs), "node_modules"),
	), nil, node, abs)
	var res nodeResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("node %s printed no JSON result: %v\n%s", script, err, r)
	}
	if !res.OK || r.code != 0 {
		t.Fatalf("node %s: check %q failed (code %q): %s\nstderr:\n%s", script, res.Failed, res.Code, res.Error, r.stderr)
	}
	return res.Checks
}

// checkJSON compares each expected check with what the script reported.
func checkJSON(t *testing.T, got map[string]json.RawMessage, want map[string]any) {
	t.Helper()
	for name, w := range want {
		raw, ok := got[name]
		if !ok {
			t.Errorf("check %q: not reported", name)
			continue
		}
		var g any
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Errorf("check %q: %v", name, err)
			continue
		}
		// Round-trip the expectation so both sides have JSON's types.
		wb, _ := json.Marshal(w)
		var wv any
		_ = json.Unmarshal(wb, &wv)
		if !reflect.DeepEqual(g, wv) {
			t.Errorf("check %q:\n got %s\nwant %s", name, raw, wb)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("check %q reported but not asserted: %s", name, got[name])
		}
	}
}

func TestNodePostgres(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	got := runNode(t, env, "pg_client.js", "alice", "pg")
	checkJSON(t, got, map[string]any{
		"simple":           8,
		"application_name": "custos-e2e-node-pg",
		"parameterized":    "Ada Lovelace",
		"types": map[string]any{
			"big": "9007199254740993", "num": "-1.000000000000000000001", "doc": map[string]any{"a": []any{1, "two"}},
			"raw": "0001feff", "arr": []any{"x", "y,z", nil}, "at": "2024-02-29T12:00:00.000Z", "yes": true,
		},
		"named statement":     []any{"Ada Lovelace", "Grace Hopper", 1},
		"multi-statement":     []any{[]any{map[string]any{"a": 1}}, []any{map[string]any{"b": 2}}},
		"error then recovery": []any{"22012", "22P02", "alive"},
		// 95 rows in pages of 10: nine PortalSuspended; 25 in pages of 7: three.
		"row limit portal": map[string]any{"rows": 95, "sum": 95 * 96 / 2, "suspended": 9, "paramRows": 25, "paramSuspended": 3},
		"sql cursor":       []any{30, 30, 30, 10},
		"transaction":      []any{"22P02", "25P02", 42},
		"binary results":   []any{7, "seven"},
		"listen notify":    []any{"node_pg_chan", "hello from pg", true},
		"large value":      []any{3 << 20, true},
	})
}

func TestPostgresJS(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	got := runNode(t, env, "postgresjs_client.js", "alice", "postgres")
	checkJSON(t, got, map[string]any{
		"application_name": "custos-e2e-postgresjs",
		// Parse + Describe + Flush in one write, answered before any Sync;
		// then Bind + Execute + Sync.
		"parameterized first use": map[string]any{"holder": "Ada Lovelace", "writes": []any{"PDH", "BES"}},
		"parameterized reuse":     map[string]any{"holder": "Alan Turing", "writes": []any{"BES"}},
		"types": map[string]any{
			"big": "9007199254740993", "num": "-1.000000000000000000001", "doc": map[string]any{"a": []any{1, "two"}},
			"raw": "0001feff", "arr": []any{"x", "y,z"}, "at": "2024-02-29T12:00:00.000Z",
		},
		"unsafe multi-statement": []any{[]any{map[string]any{"a": 1}}, []any{map[string]any{"b": 2}}},
		"unsafe with parameters": 42,
		"error then recovery":    []any{"22012", "42P01", "alive"},
		"transaction":            map[string]any{"inside": 2, "thrown": "abort this one", "savepointError": "22012", "sum": 13},
		// Execute with a 10-row limit + Flush, ten times, then one Sync.
		"cursor": map[string]any{"sizes": []any{10, 10, 10, 10, 10, 10, 10, 10, 10, 5}, "sum": 95 * 96 / 2,
			"writes": []any{"PDH", "BEH", "EH", "EH", "EH", "EH", "EH", "EH", "EH", "EH", "EH", "S"}},
		"copy out":         []any{5000, "1\tv1", "5000\tv5000"},
		"copy in":          []any{5000, 5000 * 5001 / 2},
		"listen notify":    "hello from postgres.js",
		"pool concurrency": map[string]any{"ok": true, "withinPool": true},
		"direct tls":       "direct ok",
	})
}
