package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/audit"
)

const replayUsage = `usage: custos replay SESSION_ID [--data-dir D] [--speed X] [--rows N] [--format text|json]

Plays a Postgres session back from the audit journal: its statements with
their decisions, approvals, outcomes and masked results, approval events and
the connection's end, each at its offset from the session's start.

flags:
`

// runReplay is `custos replay`.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return replayCmd(ctx, args, stdout, stderr, nil)
}

// replayCmd is runReplay with the wait of --speed injectable (nil: a
// timer).
func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer, sleep func(context.Context, time.Duration) error) error {
	fs := flag.NewFlagSet("custos replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, replayUsage)
		fs.PrintDefaults()
	}
	dataDir := fs.String("data-dir", defaultDataDir, "data directory (the journal is in DATA_DIR/audit)")
	speed := fs.Float64("speed", 0, "play back in time: 1 real time, 10 ten times faster; 0 no waiting")
	rows := fs.Int("rows", -1, "captured rows printed per statement; -1 all")
	format := fs.String("format", audit.ReplayText, "text or json (one object per line and record)")
	// The session id may come before or after the flags.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("replay: unexpected argument %q", fs.Arg(0))
	}
	if id == "" {
		fs.Usage()
		return errors.New("replay: a session id is required")
	}
	if *speed < 0 {
		return fmt.Errorf("replay: --speed %v is negative", *speed)
	}
	f := strings.ToLower(*format)
	if f != audit.ReplayText && f != audit.FormatJSON {
		return fmt.Errorf("replay: --format %q is not text or json", *format)
	}
	s, err := audit.FindSession(ctx, *dataDir, id)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return audit.WriteReplay(ctx, stdout, s, audit.ReplayOptions{
		Format: f, Rows: *rows, Speed: *speed, Sleep: sleep, Logger: log,
	})
}
