// Command custos is the gateway between AI coding agents and cardholder
// data: `custos serve` runs it from a config file, `custos dev` runs it on
// embedded defaults, `custos token` mints a token from the dev issuer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts a graceful shutdown; a second one gets the
	// default behaviour and ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "custos:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: custos <command> [flags]

commands:
  serve    run the gateway from a config file (--config)
  dev      run the gateway on embedded defaults: local OIDC issuer, throwaway PostgreSQL
  token    mint a token from the dev issuer (--data-dir, --sub, --groups, --act, --ttl)
  approvals  list, show, approve or deny parked requests (CUSTOS_ADMIN_URL, CUSTOS_TOKEN)
  audit    verify, export, evidence bundle, or print the verifier key of the audit journal (--data-dir)
  replay   play a Postgres session back from the audit journal (SESSION_ID, --speed, --rows, --format)
  xds      dump: print the Envoy configuration a config file serves (--config)
  discover find card numbers in columns not declared cardholder data (--config or --dsn)
  version  print the version
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole program, testable: args exclude the program name.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("a command is required")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "token":
		return runToken(ctx, rest, stdout, stderr)
	case "approvals":
		return runApprovals(ctx, rest, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "replay":
		return runReplay(ctx, rest, stdout, stderr)
	case "xds":
		return runXDS(ctx, rest, stdout, stderr)
	case "discover":
		return runDiscover(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "custos", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", l.format)
}
