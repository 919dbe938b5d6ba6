package config

import (
	"strings"
	"testing"
)

func TestExtProcGrantKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, section, want string }{
		{"both sources", "extproc: {grant_key: {env: K, file: /k}}", "extproc.grant_key: set exactly one of env or file"},
		{"no source", "extproc: {grant_key: {}}", "extproc.grant_key: set exactly one of env or file"},
		{"unknown field", "extproc: {key: {env: K}}", "field key not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(strings.NewReader(validYAML + "\n" + tt.section + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		section string
		want    *Secret
	}{
		{"", nil},
		{"extproc: {grant_key: {env: CUSTOS_GRANT_KEY}}", &Secret{Env: "CUSTOS_GRANT_KEY"}},
		{"extproc: {grant_key: {file: /etc/custos/grant.key}}", &Secret{File: "/etc/custos/grant.key"}},
	} {
		c, err := Parse(strings.NewReader(validYAML + "\n" + tt.section + "\n"))
		if err != nil {
			t.Fatalf("%q: %v", tt.section, err)
		}
		got := c.ExtProc.GrantKey
		if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
			t.Errorf("%q: grant_key %v, want %v", tt.section, got, tt.want)
		}
	}
}
