package discover

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/pgcluster"
	"github.com/custos-dev/custos/internal/policy"
)

func TestRunner(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cl := pgcluster.StartForTest(t, pgcluster.Options{})
	if err := cl.Exec(ctx, "postgres", `CREATE TABLE notes (body text); INSERT INTO notes VALUES ('pan 378282246310005')`); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(ctx, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cde := config.Resource{Name: "cde", Type: "postgres", Labels: map[string]string{"pci": "cde"}}
	broken := config.Resource{Name: "broken", Type: "postgres", Labels: map[string]string{"pci": "cde"}}
	plain := config.Resource{Name: "plain", Type: "postgres"}
	var mu sync.Mutex
	passes := map[string]int{}
	var failed []error
	passed := make(chan struct{}, 10)
	opts := RunnerOptions{
		Config:    config.Discovery{Rows: 10, StartWait: time.Minute},
		Resources: []config.Resource{cde, broken, plain},
		Connect: func(ctx context.Context, res *config.Resource) (*pgconn.PgConn, error) {
			if res.Name != "cde" {
				return nil, errors.New("unreachable")
			}
			return pgconn.Connect(ctx, cl.DSN("postgres"))
		},
		Policy: eng,
		Record: func(res *config.Resource, _ *Report, err error) {
			mu.Lock()
			defer mu.Unlock()
			passes[res.Name]++
			if err != nil {
				failed = append(failed, err)
			}
			if res.Name == "cde" {
				passed <- struct{}{}
			}
		},
	}
	if NewRunner(RunnerOptions{Config: opts.Config, Resources: []config.Resource{plain}, Connect: opts.Connect, Policy: eng}) != nil {
		t.Fatal("a runner without cardholder-data resources")
	}
	off := false
	if NewRunner(RunnerOptions{Config: config.Discovery{Enabled: &off}, Resources: opts.Resources, Connect: opts.Connect, Policy: eng}) != nil {
		t.Fatal("a runner with discovery off")
	}
	r := NewRunner(opts)
	v0 := eng.Version()
	again := make(chan struct{})
	r.Start(ctx, again) // returns once the first pass is done
	if eng.Version() == v0 {
		t.Fatal("the first pass did not reach the policy before Start returned")
	}
	<-passed
	again <- struct{}{}
	select {
	case <-passed:
	case <-time.After(30 * time.Second):
		t.Fatal("no second pass on demand")
	}
	mu.Lock()
	defer mu.Unlock()
	if passes["cde"] != 2 || passes["broken"] < 1 || passes["plain"] != 0 {
		t.Fatalf("passes: %v", passes)
	}
	if len(failed) == 0 || !errors.Is(failed[0], ErrScan) {
		t.Fatalf("failures: %v", failed)
	}
	// The policy now masks the found column for agents.
	d := eng.Decide(ctx, &policy.Input{
		Version: 1, Kind: policy.KindSQL,
		Principal: policy.Principal{Sub: "a", Iss: "i", Groups: []string{"agents"}},
		Resource:  policy.Resource{Name: "cde", Type: "postgres"},
		SQL: &policy.SQL{Normalized: "SELECT body FROM notes", Statements: []map[string]any{{
			"command": "SELECT", "read_only": true, "reads": []string{"public.notes"},
			"columns": []map[string]any{{"table": "public.notes", "column": "body", "usage": []string{"output"}}},
		}}},
	})
	if !d.Allow || d.Mask == nil || d.Mask.Columns["body"] != Strategy {
		t.Fatalf("decision after discovery: %+v", d)
	}
}
