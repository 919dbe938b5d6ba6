// Command covercheck checks the coverage report of `opa test --coverage`
// against a minimum, counting the policy files only (*_test.rego files are
// always fully covered and would pull the figure up). `make policy-test`
// runs it:
//
//	covercheck -min 90 out/policy-coverage.json
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "covercheck:", err)
		os.Exit(1)
	}
}

// report is the part of OPA's coverage report covercheck reads.
type report struct {
	Files map[string]struct {
		CoveredLines    int `json:"covered_lines"`
		NotCoveredLines int `json:"not_covered_lines"`
	} `json:"files"`
}

// ErrBelowMinimum: the policy files' coverage is below -min.
var ErrBelowMinimum = errors.New("policy coverage below the minimum")

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("covercheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	min := fs.Float64("min", 90, "minimum coverage of the policy files, in percent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: covercheck [-min percent] coverage.json")
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	covered, total := 0, 0
	for _, name := range slices.Sorted(maps.Keys(r.Files)) {
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		f := r.Files[name]
		n := f.CoveredLines + f.NotCoveredLines
		covered += f.CoveredLines
		total += n
		fmt.Fprintf(stdout, "%-40s %6.2f%% of %d lines\n", name, percent(f.CoveredLines, n), n)
	}
	if total == 0 {
		return errors.New("no policy files in the coverage report")
	}
	got := percent(covered, total)
	fmt.Fprintf(stdout, "%-40s %6.2f%% of %d lines (minimum %.2f%%)\n", "policy total", got, total, *min)
	if got < *min {
		return fmt.Errorf("%w: %.2f%% < %.2f%%", ErrBelowMinimum, got, *min)
	}
	return nil
}

func percent(part, whole int) float64 {
	if whole == 0 {
		return 100
	}
	return 100 * float64(part) / float64(whole)
}
