package pgfilter

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/custos-dev/custos/internal/sqlclass"
)

// Exported for the tests that cross-check against a real server.
var (
	CanonicalEncoding = canonicalEncoding
	SafeEncodings     = safeEncodings
	EncodingAliases   = encodingAliases
)

func TestCanonicalEncoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, want string
		safe       bool
	}{
		{"UTF8", "UTF8", true},
		{"utf-8", "UTF8", true},
		{"Unicode", "UTF8", true},
		{"u.t.f.8", "UTF8", true},
		{" UTF8 ", "UTF8", true},
		{"SQL_ASCII", "SQL_ASCII", true},
		{"ISO-8859-1", "LATIN1", true},
		{"iso_8859_15", "LATIN9", true},
		{"KOI8-R", "KOI8R", true},
		{"koi8", "KOI8R", true},
		{"Windows-1252", "WIN1252", true},
		{"win", "WIN1251", true},
		{"EUC-JIS-2004", "EUC_JIS_2004", true},
		{"mule_internal", "MULE_INTERNAL", true},
		{"SJIS", "SJIS", false},
		{"Shift_JIS", "SJIS", false},
		{"MS-Kanji", "SJIS", false},
		{"WIN932", "SJIS", false},
		{"Windows932", "SJIS", false},
		{"windows-936", "GBK", false},
		{"WIN950", "BIG5", false},
		{"win949", "UHC", false},
		{"gb-18030", "GB18030", false},
		{"JOHAB", "JOHAB", false},
		{"shift-jis-2004", "SHIFT_JIS_2004", false},
		{"big_5", "BIG5", false},
	}
	for _, tc := range tests {
		got, ok := canonicalEncoding(tc.name)
		if !ok || got != tc.want {
			t.Errorf("canonicalEncoding(%q) = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
		_, err := safeClientEncoding(tc.name)
		if (err == nil) != tc.safe {
			t.Errorf("safeClientEncoding(%q) = %v, want safe %v", tc.name, err, tc.safe)
		}
	}
	for _, name := range []string{"", "auto", "default", "CP932", "utf9", "s\xe9jis", "utf8\xc2\xa0", strings.Repeat("-", 60) + "utf8"} {
		if got, ok := canonicalEncoding(name); ok {
			t.Errorf("canonicalEncoding(%q) = %q, want unknown", name, got)
		}
		if _, err := safeClientEncoding(name); !errors.Is(err, ErrUnsafeEncoding) {
			t.Errorf("safeClientEncoding(%q) = %v, want refused", name, err)
		}
	}
	// Every canonical name resolves to itself, and every alias to a
	// canonical name.
	for alias, canon := range encodingAliases {
		if got, ok := canonicalEncoding(canon); !ok || got != canon {
			t.Errorf("canonical %q resolves to %q %v", canon, got, ok)
		}
		if got, _ := canonicalEncoding(alias); got != canon {
			t.Errorf("alias %q resolves to %q", alias, got)
		}
	}
}

func TestCheckStartupParams(t *testing.T) {
	t.Parallel()
	p := func(kv ...string) []param {
		var ps []param
		for i := 0; i+1 < len(kv); i += 2 {
			ps = append(ps, param{kv[i], kv[i+1]})
		}
		return ps
	}
	tests := []struct {
		name    string
		in      []param
		enc     string // the client_encoding passed upstream
		label   string // the refusal's metric label
		code    string
		message string
	}{
		{name: "none: UTF8", in: p("user", "alice"), enc: "UTF8"},
		{name: "alias canonicalised", in: p("user", "alice", "client_encoding", "latin-1"), enc: "LATIN1"},
		{name: "name case ignored", in: p("user", "alice", "Client_Encoding", "euc_jp"), enc: "EUC_JP"},
		{name: "sjis", in: p("user", "alice", "client_encoding", "SJIS"), label: "unsafe_encoding", code: "22023", message: "SJIS"},
		{name: "shift_jis alias", in: p("user", "alice", "client_encoding", "Shift_JIS"), label: "unsafe_encoding", code: "22023", message: "SJIS"},
		{name: "the last one counts", in: p("user", "alice", "client_encoding", "UTF8", "client_encoding", "BIG5"), label: "unsafe_encoding", code: "22023", message: "BIG5"},
		{name: "unknown", in: p("user", "alice", "client_encoding", "auto"), label: "unsafe_encoding", code: "22023", message: `"auto"`},
		{name: "options", in: p("user", "alice", "options", "-c client_encoding=SJIS"), label: "unsafe_encoding", code: "22023", message: "SJIS"},
		{name: "no user", in: p("database", "payments"), label: "protocol_error", code: "28000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := checkStartupParams(tc.in)
			if tc.label == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := sp.params["client_encoding"]; got != tc.enc {
					t.Fatalf("client_encoding upstream = %q, want %q", got, tc.enc)
				}
				return
			}
			var pe *paramError
			var ce *clientError
			if !errors.As(err, &pe) || pe.label != tc.label || !errors.As(err, &ce) || ce.resp.Code != tc.code || ce.resp.Severity != "FATAL" {
				t.Fatalf("err = %v, want %s %s", err, tc.label, tc.code)
			}
			if !strings.Contains(ce.resp.Message, tc.message) {
				t.Errorf("message %q, want %q", ce.resp.Message, tc.message)
			}
			if tc.label == "unsafe_encoding" && !strings.Contains(ce.resp.Hint, "UTF8") {
				t.Errorf("hint %q names no allowed encoding", ce.resp.Hint)
			}
		})
	}
}

func TestCheckReportedEncoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		reported, want string
		ok             bool
	}{
		{"UTF8", "UTF8", true},
		{"UNICODE", "UTF8", true}, // the server echoes exactly "UNICODE" as given
		{"LATIN1", "UTF8", false},
		{"SJIS", "SJIS", false},
		{"", "UTF8", false},
		{"LATIN1", "", true},
		{"BIG5", "", false},
	}
	for _, tc := range tests {
		if err := checkReportedEncoding(tc.reported, tc.want); (err == nil) != tc.ok {
			t.Errorf("checkReportedEncoding(%q, %q) = %v, want ok %v", tc.reported, tc.want, err, tc.ok)
		}
	}
}

func TestInvariantDenials(t *testing.T) {
	t.Parallel()
	cl := sqlclass.New(0)
	tests := []struct {
		sql    string
		reason string // "" when no invariant applies
	}{
		{"SET client_encoding = 'SJIS'", reasonClientEncoding},
		{"SET client_encoding TO DEFAULT", reasonClientEncoding},
		{"SET NAMES 'BIG5'", reasonClientEncoding},
		{"SET LOCAL client_encoding = 'GBK'", reasonClientEncoding},
		{"RESET client_encoding", reasonClientEncoding},
		{"SELECT set_config('client_encoding', 'SJIS', false)", reasonClientEncoding},
		{"SELECT pg_catalog.set_config('CLIENT_ENCODING', 'SJIS', false)", reasonClientEncoding},
		{"SELECT set_config('client_' || 'encoding', 'SJIS', false)", reasonAnySetting},
		{"SELECT set_config(name, 'SJIS', false) FROM pg_settings WHERE name LIKE 'client_enc%'", reasonAnySetting},
		{"SELECT set_config($1, $2, false)", reasonAnySetting},
		{"PREPARE p AS SELECT set_config($1, 'SJIS', false)", reasonAnySetting},
		{"EXPLAIN ANALYZE SELECT set_config('client_encoding', 'SJIS', false)", reasonClientEncoding},
		{"UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'", reasonPgSettings},
		{"UPDATE pg_catalog.pg_settings SET setting = 'on' WHERE name = 'enable_seqscan'", reasonPgSettings},
		{"WITH u AS (UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding' RETURNING 1) SELECT * FROM u", reasonPgSettings},
		{"SELECT set_config('search_path', 'public', false)", ""},
		{"SET search_path = public", ""},
		{"SHOW client_encoding", ""},
		{"SELECT current_setting('client_encoding')", ""},
		{"SELECT name, setting FROM pg_settings", ""},
	}
	for _, tc := range tests {
		res, err := cl.Classify(tc.sql)
		if err != nil {
			t.Fatalf("%q: %v", tc.sql, err)
		}
		dec := invariantDenial(res.Statements)
		switch {
		case tc.reason == "" && dec != nil:
			t.Errorf("%q refused: %v", tc.sql, dec.Reasons)
		case tc.reason != "" && (dec == nil || dec.Allow || !strings.HasPrefix(dec.ID, "dec_") || !slices.Contains(dec.Reasons, tc.reason)):
			t.Errorf("%q: decision %+v, want a denial for %q", tc.sql, dec, tc.reason)
		}
	}
}
