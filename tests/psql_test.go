package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// psql 15 speaks the simple Query protocol only.

func TestPsqlQueries(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	p := newPsql(t, env, "alice")

	tests := []struct {
		name string
		args []string
		want string
	}{
		// One Query message with two statements: two results.
		{"multi-statement", []string{"-c", "SELECT 1; SELECT 2"}, "1\n2\n"},
		{"demo cards", []string{"-F", ",", "-c", "SELECT id, holder, pan FROM cards WHERE id <= 2 ORDER BY id"},
			"1,Ada Lovelace,4242424242424242\n2,Alan Turing,5555555555554444\n"},
		// The upstream session is the gateway's role, never the client's name.
		{"upstream role", []string{"-F", ",", "-c", "SELECT current_user, session_user, current_database()"},
			env.Resource.User + "," + env.Resource.User + ",payments\n"},
		{"startup parameter", []string{"-c", "SHOW application_name"}, "custos-e2e-psql\n"},
		{"utf8", []string{"-c", "SELECT 'grüße ✓ 日本'"}, "grüße ✓ 日本\n"},
		{"several -c", []string{"-c", "SELECT 'a'", "-c", "SELECT 'b'"}, "a\nb\n"},
		// An empty query gets EmptyQueryResponse: nothing printed.
		{"empty query", []string{"-c", ";"}, ""},
		{"many rows", []string{"-c", "SELECT count(*), sum(length(repeat('x', g))) FROM (SELECT g FROM generate_series(1, 20000) g) s",
			"-c", "SELECT md5(string_agg(g::text, ',' ORDER BY g)) FROM generate_series(1, 100000) g"},
			"20000|200010000\n" + md5Series(100000) + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.ok(tc.args...); got != tc.want {
				t.Errorf("psql %q:\n got %q\nwant %q", tc.args, got, tc.want)
			}
		})
	}

	t.Run("notice", func(t *testing.T) {
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", "DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
		if r.code != 0 || !strings.Contains(r.stderr, "NOTICE:  hello 42") {
			t.Errorf("want the NOTICE relayed: %s", r)
		}
	})
	t.Run("many rows aligned", func(t *testing.T) {
		// Default (aligned) output of a wide result: psql reads it all before printing.
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", "SELECT g, repeat('y', 500) AS pad FROM generate_series(1, 5000) g")
		if r.code != 0 || !strings.Contains(r.stdout, "(5000 rows)") {
			t.Errorf("aligned output: %.400s", r)
		}
	})
}

func TestPsqlErrors(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	p := newPsql(t, env, "alice")
	p.ok("-c", "DROP TABLE IF EXISTS psql_multi_err")

	t.Run("mid multi-statement", func(t *testing.T) {
		// One Query, one implicit transaction: the error in the third
		// statement rolls back the first two and skips the fourth.
		r := p.run(nil, "-A", "-t", "-c",
			"CREATE TABLE psql_multi_err (x int); INSERT INTO psql_multi_err VALUES (1); SELECT 1/0; INSERT INTO psql_multi_err VALUES (2)")
		if r.code != 1 || !strings.Contains(r.stderr, "division by zero") {
			t.Fatalf("want exit 1 and division by zero: %s", r)
		}
		if got := p.ok("-c", "SELECT to_regclass('psql_multi_err') IS NULL"); got != "t\n" {
			t.Errorf("table exists after the failed multi-statement query (to_regclass IS NULL = %q)", got)
		}
	})

	script := strings.Join([]string{
		"SELECT 'before';",
		"SELECT 1/0;",
		"SELECT 'after';",
		"BEGIN;",
		"SELECT 'in tx';",
		"SELECT * FROM no_such_table;",
		"SELECT 'aborted';",
		"ROLLBACK;",
		"SELECT 'end';",
	}, "\n")
	t.Run("script continues", func(t *testing.T) {
		r := p.run([]byte(script), "-A", "-t", "-f", "-")
		if r.code != 0 {
			t.Fatalf("psql -f without ON_ERROR_STOP: %s", r)
		}
		if want := "before\nafter\nBEGIN\nin tx\nROLLBACK\nend\n"; r.stdout != want {
			t.Errorf("stdout %q, want %q", r.stdout, want)
		}
		for _, want := range []string{
			"division by zero",
			`relation "no_such_table" does not exist`,
			"current transaction is aborted, commands ignored until end of transaction block",
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
		}
	})
	t.Run("script stops", func(t *testing.T) {
		r := p.run([]byte(script), "-v", "ON_ERROR_STOP=1", "-A", "-t", "-f", "-")
		if r.code != 3 || r.stdout != "before\n" {
			t.Errorf("psql -f with ON_ERROR_STOP: want exit 3 after 'before': %s", r)
		}
	})
	t.Run("session survives errors", func(t *testing.T) {
		// One session: the error, then a good query in the same connection.
		r := p.run([]byte("SELECT 1/0;\nSELECT pg_backend_pid() = pg_backend_pid();\n"), "-A", "-t", "-f", "-")
		if r.code != 0 || r.stdout != "t\n" {
			t.Errorf("query after an error: %s", r)
		}
	})
}

func TestPsqlCopy(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	p := newPsql(t, env, "alice")
	dir := t.TempDir()
	p.ok("-c", "DROP TABLE IF EXISTS psql_copy, psql_copy_bin",
		"-c", "CREATE TABLE psql_copy (id int PRIMARY KEY, name text, amount numeric(12,2), note text)",
		"-c", "CREATE TABLE psql_copy_bin (LIKE psql_copy)")

	// Canonical PostgreSQL CSV, so COPY TO must give back the same bytes:
	// quotes only where needed, NULL as an empty unquoted field.
	const rows = 30000
	var in bytes.Buffer
	in.WriteString("id,name,amount,note\n")
	in.WriteString(`1,"Smith, Jane",12.50,"she said ""hi"""` + "\n")
	in.WriteString("2,Ünïcødé ✓,0.01,\n")
	in.WriteString("3,\"two\nlines\",-7.00,\"\"\n")
	for i := 4; i <= rows; i++ {
		fmt.Fprintf(&in, "%d,holder-%d,%d.%02d,note %d %s\n", i, i, i*3, i%100, i, strings.Repeat("z", i%40))
	}
	inFile := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(inFile, in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("in", func(t *testing.T) {
		out := p.ok("-c", fmt.Sprintf(`\copy psql_copy FROM '%s' WITH (FORMAT csv, HEADER true)`, inFile))
		if out != fmt.Sprintf("COPY %d\n", rows) {
			t.Fatalf("\\copy from: %q", out)
		}
		got := p.ok("-F", ",", "-c", "SELECT count(*), count(note), sum(id), (SELECT name FROM psql_copy WHERE id = 3), (SELECT note FROM psql_copy WHERE id = 3) = '' FROM psql_copy")
		want := fmt.Sprintf("%d,%d,%d,two\nlines,t\n", rows, rows-1, rows*(rows+1)/2)
		if got != want {
			t.Fatalf("after \\copy from: %q, want %q", got, want)
		}
	})
	query := "(SELECT * FROM psql_copy ORDER BY id)"
	t.Run("out to stdout", func(t *testing.T) {
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", `\copy `+query+` TO STDOUT WITH (FORMAT csv, HEADER true)`)
		if r.code != 0 {
			t.Fatal(r)
		}
		if r.stdout != in.String() {
			t.Errorf("COPY TO STDOUT differs from what was loaded (%d bytes vs %d)\n%s", len(r.stdout), in.Len(), firstDiff(r.stdout, in.String()))
		}
	})
	t.Run("out to file", func(t *testing.T) {
		outFile := filepath.Join(dir, "out.csv")
		if out := p.ok("-c", fmt.Sprintf(`\copy %s TO '%s' WITH (FORMAT csv, HEADER true)`, query, outFile)); out != fmt.Sprintf("COPY %d\n", rows) {
			t.Fatalf("\\copy to file: %q", out)
		}
		got, err := os.ReadFile(outFile)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, in.Bytes()) {
			t.Errorf("file differs from what was loaded\n%s", firstDiff(string(got), in.String()))
		}
	})
	t.Run("binary round trip", func(t *testing.T) {
		binFile := filepath.Join(dir, "out.bin")
		p.ok("-c", fmt.Sprintf(`\copy psql_copy TO '%s' WITH (FORMAT binary)`, binFile),
			"-c", fmt.Sprintf(`\copy psql_copy_bin FROM '%s' WITH (FORMAT binary)`, binFile))
		got := p.ok("-c", "SELECT (SELECT count(*) FROM psql_copy_bin), (SELECT count(*) FROM (SELECT * FROM psql_copy EXCEPT SELECT * FROM psql_copy_bin) d)")
		if got != fmt.Sprintf("%d|0\n", rows) {
			t.Errorf("binary COPY round trip: count|differences = %q", got)
		}
	})
	t.Run("failed copy in", func(t *testing.T) {
		// A bad line near the end: the server fails the COPY while the
		// client streams; nothing is loaded and the session goes on.
		var bad bytes.Buffer
		for i := 1; i <= 5000; i++ {
			fmt.Fprintf(&bad, "%d,n,1.00,x\n", rows+i)
		}
		bad.WriteString("oops,n,1.00,x\n")
		badFile := filepath.Join(dir, "bad.csv")
		if err := os.WriteFile(badFile, bad.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		r := p.run(nil, "-A", "-t",
			"-c", fmt.Sprintf(`\copy psql_copy FROM '%s' WITH (FORMAT csv)`, badFile),
			"-c", "SELECT count(*) FROM psql_copy")
		if !strings.Contains(r.stderr, `invalid input syntax for type integer: "oops"`) {
			t.Errorf("want the COPY error: %s", r)
		}
		if r.stdout != fmt.Sprintf("%d\n", rows) {
			t.Errorf("rows after the failed COPY: %s", r)
		}
	})
}

// \lo_import and \lo_export go through libpq's large-object functions,
// which use the FunctionCall message, not SQL.
func TestPsqlLargeObject(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	p := newPsql(t, env, "alice")
	dir := t.TempDir()
	data := make([]byte, 300<<10+123) // several lo_write calls of libpq's 8 KB buffer
	_, _ = rand.Read(data)
	src := filepath.Join(dir, "blob.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := p.ok("-c", fmt.Sprintf(`\lo_import '%s'`, src))
	m := regexp.MustCompile(`^lo_import (\d+)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("\\lo_import printed %q", out)
	}
	oid := m[1]
	t.Cleanup(func() { p.run(nil, "-c", `\lo_unlink `+oid) })
	if got := p.ok("-c", fmt.Sprintf("SELECT length(lo_get(%s)), md5(lo_get(%s)) = '%x'", oid, oid, md5Sum(data))); got != fmt.Sprintf("%d|t\n", len(data)) {
		t.Errorf("large object on the server: %q", got)
	}
	dst := filepath.Join(dir, "blob.out")
	if out := p.ok("-c", fmt.Sprintf(`\lo_export %s '%s'`, oid, dst)); out != "lo_export\n" {
		t.Errorf("\\lo_export printed %q", out)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("exported large object differs: %d bytes, want %d", len(got), len(data))
	}
	if out := p.ok("-c", `\lo_unlink `+oid); out != "lo_unlink "+oid+"\n" {
		t.Errorf("\\lo_unlink printed %q", out)
	}
}

// firstDiff describes where two long strings start to differ.
func firstDiff(a, b string) string {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			lo := max(0, i-60)
			return fmt.Sprintf("first difference at byte %d:\n got ...%q\nwant ...%q", i, a[lo:min(len(a), i+60)], b[lo:min(len(b), i+60)])
		}
	}
	return fmt.Sprintf("one is a prefix of the other (%d vs %d bytes)", len(a), len(b))
}
