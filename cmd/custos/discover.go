package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/discover"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/pgfilter"
)

// newDiscoverer is the discovery runner of a gateway (nil when off).
func newDiscoverer(cfg *config.Config, eng *policy.Engine, log *slog.Logger, record func(*config.Resource, *discover.Report, error)) *discover.Runner {
	if eng == nil {
		return nil
	}
	return discover.NewRunner(discover.RunnerOptions{
		Config: cfg.Discovery, Resources: cfg.Resources, Connect: connectResource,
		Policy: eng, Logger: log, Record: record,
	})
}

// connectResource logs in to res with the gateway-held credential.
func connectResource(ctx context.Context, res *config.Resource) (*pgconn.PgConn, error) {
	pc, err := pgfilter.UpstreamConfig(res)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return pgconn.ConnectConfig(cctx, pc)
}

// discoveryEvent records one pass over one resource: the columns found
// (names only) and the tables that could not be sampled.
func (a *auditor) discoveryEvent(res *config.Resource, rep *discover.Report, err error) {
	if !a.enabled() {
		return
	}
	ev := audit.Event{
		Name: audit.EventDiscovery, Outcome: audit.OutcomeSuccess,
		Resource: res.Name, ResourceType: "postgres", DBSystem: audit.DBSystemPostgreSQL, DBNamespace: res.Database,
	}
	if err != nil {
		ev.Outcome, ev.ErrorType, ev.Error = audit.OutcomeFailure, "discovery_failed", err.Error()
		_ = a.record(ev) // logged and counted
		return
	}
	found := make([]string, 0, len(rep.Found))
	tables := map[string]bool{}
	for _, c := range rep.Found {
		found = append(found, c.Table+"."+c.Column)
		tables[c.Table] = true
	}
	ev.DBCollections = slices.Sorted(maps.Keys(tables))
	ev.Attrs = []audit.Attr{
		audit.Strings("custos.discovery.columns", found),
		audit.Int("custos.discovery.tables", int64(rep.Tables)),
		audit.Int("custos.discovery.candidates", int64(rep.Columns)),
	}
	if len(rep.Errors) > 0 {
		ev.Attrs = append(ev.Attrs, audit.Strings("custos.discovery.errors", rep.Errors))
	}
	_ = a.record(ev) // logged and counted
}

const discoverUsage = `usage: custos discover [--config FILE | --dsn DSN] [flags]

Samples the text, JSON, array and wide numeric columns of the cardholder-data
resources (label pci: cde) for card numbers and prints the columns where it
finds them. A running custos does the same at start, on SIGHUP and every
discovery.interval, and treats those columns as cardholder data.

flags:
`

// runDiscover is `custos discover`: one pass, printed.
func runDiscover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("custos discover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, discoverUsage)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "config file: sample its cardholder-data resources with the gateway-held credential")
	dsn := fs.String("dsn", "", "sample this database instead (e.g. $CUSTOS_UPSTREAM_DSN of custos dev)")
	only := fs.String("resource", "", "with --config: this resource only")
	rows := fs.Int("rows", config.DefaultDiscoveryRows, "rows sampled per table")
	format := fs.String("format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("discover: unexpected arguments %v", fs.Args())
	}
	if (*cfgPath == "") == (*dsn == "") {
		return errors.New("discover: give exactly one of --config or --dsn")
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("discover: --format %q: want text or json", *format)
	}
	opts := discover.Options{Rows: *rows}
	var reports []*discover.Report
	if *dsn != "" {
		conn, err := pgconn.Connect(ctx, *dsn)
		if err != nil {
			return fmt.Errorf("discover: connect: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		rep, err := discover.Scan(ctx, conn, opts)
		if err != nil {
			return err
		}
		reports = append(reports, rep)
	} else {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		for i := range cfg.Resources {
			res := &cfg.Resources[i]
			if *only != "" && res.Name != *only || *only == "" && !res.CardholderData() {
				continue
			}
			rep, err := discover.ScanResource(ctx, connectResource, res, opts)
			if err != nil {
				return fmt.Errorf("discover: resource %s: %w", res.Name, err)
			}
			reports = append(reports, rep)
		}
		if len(reports) == 0 {
			return errors.New("discover: no cardholder-data resource (label pci: cde) in the config")
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(reports)
	}
	return writeDiscoveryText(stdout, reports)
}

func writeDiscoveryText(w io.Writer, reports []*discover.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, rep := range reports {
		name := rep.Resource
		if name == "" {
			name = rep.Database
		}
		fmt.Fprintf(tw, "%s: %d tables, %d candidate columns sampled, %d with card data\n", name, rep.Tables, rep.Columns, len(rep.Found))
		if len(rep.Found) > 0 {
			fmt.Fprintln(tw, "TABLE\tCOLUMN\tTYPE\tHITS\tSAMPLED")
		}
		for _, c := range rep.Found {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", c.Table, c.Column, c.Type, c.Hits, c.Sampled)
		}
		for _, e := range rep.Errors {
			fmt.Fprintf(tw, "not sampled: %s\n", strings.TrimSpace(e))
		}
	}
	return tw.Flush()
}
