package pgcluster

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSortByVersionDesc(t *testing.T) {
	t.Parallel()
	dirs := []string{
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/devel/bin",
		"/usr/lib/postgresql/17/bin",
		"/usr/lib/postgresql/10/bin",
	}
	sortByVersionDesc(dirs)
	want := []string{
		"/usr/lib/postgresql/17/bin",
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/10/bin",
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/devel/bin",
	}
	if !slices.Equal(dirs, want) {
		t.Errorf("sorted = %v, want %v", dirs, want)
	}
}

func TestQuoting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ fn, in, want string }{
		{"conf", "plain", "'plain'"},
		{"conf", "it's", "'it''s'"},
		{"conf", `a\b`, `'a\\b'`},
		{"conf", "x\ny", `'x\ny'`},
		{"ident", `we"ird name`, `"we""ird name"`},
		{"literal", "it's", "'it''s'"},
		{"literal", `a\'b`, `E'a\\''b'`},
	} {
		var got string
		switch tc.fn {
		case "conf":
			got = quoteConfValue(tc.in)
		case "ident":
			got = quoteIdent(tc.in)
		case "literal":
			got = quoteLiteral(tc.in)
		}
		if got != tc.want {
			t.Errorf("%s(%q) = %s, want %s", tc.fn, tc.in, got, tc.want)
		}
	}
}

func TestValidateSettings(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{
		"fsync": true, "pg_stat_statements.track": true, "_x": true,
		"": false, "a b": false, "a\nport": false, "a=b": false, "1abc": false,
	} {
		err := validateSettings(map[string]string{name: "on"})
		if (err == nil) != ok {
			t.Errorf("validateSettings(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	if err := validateSettings(map[string]string{"x": "a\x00b"}); err == nil {
		t.Error("NUL in a value accepted")
	}
}

func TestRenderConf(t *testing.T) {
	t.Parallel()
	conf := string(renderConf(confSettings{
		port: 5433, socketDir: "/tmp/s", tls: true, maxConns: 200, listenAddr: "127.0.0.1",
		extra: map[string]string{"max_connections": "50", "fsync": "off"},
	}))
	for _, want := range []string{
		"port = '5433'\n", "unix_socket_directories = '/tmp/s'\n", "ssl = 'on'\n",
		"ssl_cert_file = 'server.crt'\n", "password_encryption = 'scram-sha-256'\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("custos.conf lacks %q:\n%s", want, conf)
		}
	}
	// The caller's settings come after pgcluster's, so they win.
	if strings.Index(conf, "max_connections = '50'") < strings.Index(conf, "max_connections = '200'") {
		t.Errorf("caller setting is not after the default:\n%s", conf)
	}
	if strings.Index(conf, "fsync") > strings.Index(conf, "max_connections = '50'") {
		t.Errorf("caller settings are not sorted:\n%s", conf)
	}
}

func TestServerLog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	l := newServerLog(logger, file)
	_, _ = l.Write([]byte("2026-01-01 00:00:00 UTC [1] LOG:  starting\n2026-01-01 00:00:00 UTC [1] FA"))
	_, _ = l.Write([]byte("TAL:  could not bind\npartial"))
	if got, want := l.Tail(), "2026-01-01 00:00:00 UTC [1] LOG:  starting\n2026-01-01 00:00:00 UTC [1] FATAL:  could not bind\npartial"; got != want {
		t.Errorf("Tail = %q, want %q", got, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Write([]byte("after close\n")); n != 12 || err != nil {
		t.Errorf("Write after Close = %d, %v", n, err)
	}
	out := buf.String()
	for _, want := range []string{"level=INFO msg=\"postgres output\"", "level=WARN", "line=partial"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "after close") {
		t.Errorf("logged after Close:\n%s", out)
	}
	b, err := os.ReadFile(file.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "partial") {
		t.Errorf("log file = %q", b)
	}
}

func TestLineLevel(t *testing.T) {
	t.Parallel()
	for line, want := range map[string]slog.Level{
		"2026-01-01 UTC [7] LOG:  database system is ready":              slog.LevelInfo,
		"2026-01-01 UTC [7] ERROR:  relation \"x\" does not exist":       slog.LevelWarn,
		"2026-01-01 UTC [7] FATAL:  password authentication failed":      slog.LevelWarn,
		"2026-01-01 UTC [7] PANIC:  could not write to file":             slog.LevelError,
		"2026-01-01 UTC [7] DEBUG1:  something":                          slog.LevelDebug,
		"2026-01-01 UTC [7] STATEMENT:  SELECT 'ERROR: inside a string'": slog.LevelInfo,
	} {
		if got := lineLevel(line); got != want {
			t.Errorf("lineLevel(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestPIDFileReady(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "postmaster.pid")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("123\n/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  5432001    32768\nstarting\n")
	if pidFileReady(path, 123) {
		t.Error("starting reported as ready")
	}
	write("123\n/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  5432001    32768\nready   \n")
	if !pidFileReady(path, 123) {
		t.Error("ready not reported")
	}
	if pidFileReady(path, 124) {
		t.Error("another pid's file reported as ready")
	}
}

func TestCheckTraversable(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	closed := filepath.Join(base, "closed")
	inner := filepath.Join(closed, "inner")
	if err := os.MkdirAll(inner, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	stranger := &account{name: "stranger", uid: 54321, gid: 54321, groups: []int{54321}}
	err := stranger.checkTraversable(inner)
	if err == nil || !strings.Contains(err.Error(), "cannot traverse") {
		t.Fatalf("checkTraversable through a 0700 directory = %v, want a 'cannot traverse' error", err)
	}
	// The first directory it cannot search is named (t.TempDir's own
	// directories are 0700 too, so it may be one above).
	if !strings.Contains(err.Error(), base) {
		t.Errorf("error does not name a directory on the path: %v", err)
	}
	open := testBaseDir(t)
	if err := stranger.checkTraversable(open); err != nil {
		t.Errorf("checkTraversable(%s) = %v, want nil for a 0711 directory under the temp dir", open, err)
	}
	var none *account
	if err := none.checkTraversable(inner); err != nil {
		t.Errorf("nil account: %v", err)
	}
}
