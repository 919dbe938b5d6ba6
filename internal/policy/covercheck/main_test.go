package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	report := `{"files": {
		"policies/a.rego": {"covered_lines": 90, "not_covered_lines": 10, "coverage": 90},
		"policies/b.rego": {"covered_lines": 50, "coverage": 100},
		"policies/a_test.rego": {"covered_lines": 1000, "coverage": 100}
	}, "coverage": 99}`
	path := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		err  error
		out  string
	}{
		{"above", []string{"-min", "90", path}, nil, "policy total                              93.33% of 150 lines (minimum 90.00%)"},
		{"below", []string{"-min", "95", path}, ErrBelowMinimum, "policies/a.rego                           90.00% of 100 lines"},
		{"usage", nil, nil, ""},
		{"missing file", []string{filepath.Join(t.TempDir(), "none.json")}, os.ErrNotExist, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			err := run(tt.args, &out, &errOut)
			switch {
			case tt.name == "usage":
				if err == nil || !strings.Contains(err.Error(), "usage") {
					t.Errorf("run: %v, want a usage error", err)
				}
			case tt.err == nil && err != nil, tt.err != nil && !errors.Is(err, tt.err):
				t.Errorf("run: %v, want %v", err, tt.err)
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("output:\n%s\nwant a line %q", out.String(), tt.out)
			}
		})
	}
}

func TestRunRejectsEmptyAndBadReports(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"empty.json": `{"files": {"policies/x_test.rego": {"covered_lines": 3}}}`,
		"bad.json":   `{"files": [`,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := run([]string{p}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
