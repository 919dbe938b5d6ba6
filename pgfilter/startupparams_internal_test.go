package pgfilter

import (
	"slices"
	"testing"
)

func TestParseStartupOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []param
		err  bool
	}{
		{in: "", want: nil},
		{in: "-c search_path=a,b", want: []param{{"search_path", "a,b"}}},
		{in: "-csearch_path=a  --Statement-Timeout=5s", want: []param{{"search_path", "a"}, {"statement_timeout", "5s"}}},
		{in: `-c DateStyle=SQL,\ DMY`, want: []param{{"datestyle", "SQL, DMY"}}},
		{in: `-c application_name=a\\b`, want: []param{{"application_name", `a\b`}}},
		{in: "-c x=", want: []param{{"x", ""}}},
		{in: "-c", err: true},
		{in: "-c search_path", err: true},
		{in: "--=x", err: true},
		{in: "-B 100", err: true},
		{in: "-F", err: true},
		{in: "search_path=a", err: true},
	}
	for _, tt := range tests {
		got, err := parseStartupOptions(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("parseStartupOptions(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestCheckStartupParamsOptions(t *testing.T) {
	t.Parallel()
	sp, err := checkStartupParams([]param{
		{"user", "alice"},
		{"options", "-c search_path=from_options -c TimeZone=UTC --client-encoding=LATIN1"},
		{"search_path", "explicit"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A parameter given both ways keeps the parameter's value, as the
	// server applies options first.
	want := map[string]string{"search_path": "explicit", "TimeZone": "UTC", "client_encoding": "LATIN1"}
	for k, v := range want {
		if sp.params[k] != v {
			t.Errorf("%s = %q, want %q (params %v)", k, sp.params[k], v, sp.params)
		}
	}
	if _, ok := sp.params["options"]; ok {
		t.Error("options passed on as it was sent")
	}
	// An unsafe encoding inside options is refused like the parameter.
	if _, err := checkStartupParams([]param{{"user", "a"}, {"options", "-c client_encoding=SJIS"}}); err == nil {
		t.Error("client_encoding=SJIS in options accepted")
	}
}

func TestSplitSearchPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{`"$user", public`, []string{"gw", "public"}, true},
		{`Public ,  "My ""S""",pg_catalog`, []string{"public", `My "S"`, "pg_catalog"}, true},
		{``, nil, true},
		{`a,,b`, nil, false},
		{`"unterminated`, nil, false},
		{`a b`, nil, false},
		{`""`, nil, false},
	}
	for _, tt := range tests {
		got, ok := splitSearchPath(tt.in, "gw")
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("splitSearchPath(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
