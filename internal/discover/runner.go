package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
)

// DataPath is where a Runner puts the found columns in the policy's data:
// data.custos.discovered.cardholder_tables (policies/discovered.rego).
const DataPath = "custos/discovered"

// Strategy is how a found column is masked: as a PAN column.
const Strategy = "last4"

// DataSetter receives the found columns as policy data
// (*policy.Engine.SetData).
type DataSetter interface {
	SetData(ctx context.Context, dir string, doc any) error
}

// Runner runs passes over the cardholder-data resources and hands what
// they found to the policy, which then treats those columns as cardholder
// data.
type Runner struct {
	cfg       config.Discovery
	resources []config.Resource
	connect   func(context.Context, *config.Resource) (*pgconn.PgConn, error)
	policy    DataSetter
	log       *slog.Logger
	record    func(*config.Resource, *Report, error)

	mu sync.Mutex // one pass at a time
	// found holds every pass's columns per resource: a table that could not
	// be sampled this time keeps what an earlier pass found.
	found map[string]map[string]any
}

// RunnerOptions configure NewRunner.
type RunnerOptions struct {
	Config    config.Discovery
	Resources []config.Resource // the postgres resources labelled cardholder data are sampled
	// Connect logs in to a resource (with the gateway-held credential).
	Connect func(context.Context, *config.Resource) (*pgconn.PgConn, error)
	Policy  DataSetter
	Logger  *slog.Logger
	// Record is told of every pass over every resource, for the audit.
	Record func(res *config.Resource, rep *Report, err error)
}

// NewRunner returns nil when discovery is off or there is nothing to
// sample.
func NewRunner(opts RunnerOptions) *Runner {
	var res []config.Resource
	for _, r := range opts.Resources {
		if r.CardholderData() && (r.Type == "" || r.Type == "postgres") {
			res = append(res, r)
		}
	}
	if !opts.Config.On() || opts.Policy == nil || opts.Connect == nil || len(res) == 0 {
		return nil
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{
		cfg: opts.Config, resources: res, connect: opts.Connect, policy: opts.Policy,
		log: log, record: opts.Record, found: map[string]map[string]any{},
	}
}

// Pass samples every resource once and updates the policy's data. A
// resource that cannot be reached or listed is logged, recorded and
// returned in the error; the others still count.
func (r *Runner) Pass(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for i := range r.resources {
		res := &r.resources[i]
		rep, err := r.scan(ctx, res)
		if r.record != nil {
			r.record(res, rep, err)
		}
		if err != nil {
			r.log.Error("discovery pass failed", "resource", res.Name, "error", err)
			errs = append(errs, fmt.Errorf("resource %s: %w", res.Name, err))
			continue
		}
		found := r.found[res.Name]
		if found == nil {
			found = map[string]any{}
			r.found[res.Name] = found
		}
		maps.Copy(found, rep.PolicyData(Strategy))
		r.log.Info("discovery pass done", "resource", res.Name, "tables", rep.Tables, "columns", rep.Columns,
			"found", len(rep.Found), "errors", len(rep.Errors), "duration", rep.Finished.Sub(rep.Started).String())
	}
	if err := r.policy.SetData(ctx, DataPath, map[string]any{"cardholder_tables": r.tables()}); err != nil {
		errs = append(errs, fmt.Errorf("policy data: %w", err))
	}
	return errors.Join(errs...)
}

// tables merges what every resource's passes found.
func (r *Runner) tables() map[string]any {
	tables := map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(r.found)) {
		for table, cols := range r.found[name] {
			merged, _ := tables[table].(map[string]any)
			if merged == nil {
				merged = map[string]any{}
				tables[table] = merged
			}
			maps.Copy(merged, cols.(map[string]any))
		}
	}
	return tables
}

func (r *Runner) scan(ctx context.Context, res *config.Resource) (*Report, error) {
	return ScanResource(ctx, r.connect, res, Options{Rows: r.cfg.Rows, TableTimeout: r.cfg.TableTimeout, Logger: r.log})
}

// ScanResource logs in to res with connect and runs one pass over it.
func ScanResource(ctx context.Context, connect func(context.Context, *config.Resource) (*pgconn.PgConn, error), res *config.Resource, opts Options) (*Report, error) {
	conn, err := connect(ctx, res)
	if err != nil {
		return nil, fmt.Errorf("%w: connect: %w", ErrScan, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := Scan(ctx, conn, opts)
	if err != nil {
		return nil, err
	}
	rep.Resource = res.Name
	return rep, nil
}

// Start runs the first pass, waiting for it at most Config.StartWait, then
// a pass every Config.Interval and on each receive from again, until ctx
// ends.
func (r *Runner) Start(ctx context.Context, again <-chan struct{}) {
	first := make(chan struct{})
	go func() {
		defer close(first)
		_ = r.Pass(ctx) // logged and recorded
	}()
	select {
	case <-first:
	case <-time.After(r.cfg.StartWait):
		r.log.Warn("discovery pass still running at start; found columns apply when it ends", "waited", r.cfg.StartWait.String())
	case <-ctx.Done():
	}
	go func() {
		<-first
		var tick <-chan time.Time
		if r.cfg.Interval > 0 {
			t := time.NewTicker(r.cfg.Interval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			case <-again:
			}
			_ = r.Pass(ctx)
		}
	}()
}
