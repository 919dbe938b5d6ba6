package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/internal/audit"
)

const auditUsage = `usage: custos audit <command> [flags]

commands:
  verify [--key PUBKEYFILE]                          check the hash chain and the signed checkpoints;
                                                     names the first bad record; exit status 1 on any problem
  export [--from T] [--to T] [--format csv|json] [--out FILE]
                                                     records in [from, to) (RFC 3339), default the whole journal
  evidence --out DIR [--from T] [--to T] [--key PUBKEYFILE]
                                                     the auditor bundle for records in [from, to): access, writes with
                                                     their approvals, masking, sessions (CSV), verification, PCI DSS
                                                     10.2.2 field map, summary and a SHA-256 manifest; DIR must be new
                                                     or empty; exit status 1 when the journal does not verify
  key                                                print the checkpoint verifier key (keep a copy away from the data dir)

Every command takes --data-dir (default ./.custos); the journal is in DATA_DIR/audit.
`

// runAudit dispatches the audit commands.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return errors.New("audit: a command is required (verify, export, evidence, key)")
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("custos audit "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir, "data directory (the journal is in DATA_DIR/audit)")
	switch cmd {
	case "verify":
		keyFile := fs.String("key", "", "verifier key file (output of `custos audit key`); default: derived from the data dir's signing key")
		if err := parseNoArgs(fs, rest); err != nil {
			return err
		}
		return auditVerify(ctx, *dataDir, *keyFile, stdout, stderr)
	case "export":
		from := fs.String("from", "", "first time included (RFC 3339); default the start")
		to := fs.String("to", "", "first time excluded (RFC 3339); default the end")
		format := fs.String("format", audit.FormatJSON, "csv or json")
		out := fs.String("out", "", "output file (default stdout)")
		if err := parseNoArgs(fs, rest); err != nil {
			return err
		}
		return auditExport(ctx, *dataDir, *from, *to, *format, *out, stdout, stderr)
	case "evidence":
		from := fs.String("from", "", "first time included (RFC 3339); default the start")
		to := fs.String("to", "", "first time excluded (RFC 3339); default the end")
		out := fs.String("out", "", "bundle directory, created (an existing one must be empty); required")
		keyFile := fs.String("key", "", "verifier key file (output of `custos audit key`); default: derived from the data dir's signing key")
		if err := parseNoArgs(fs, rest); err != nil {
			return err
		}
		return auditEvidence(ctx, *dataDir, *from, *to, *out, *keyFile, stdout, stderr)
	case "key":
		keyFile := fs.String("signing-key", "", "signing key file (default DATA_DIR/audit/signing.key)")
		if err := parseNoArgs(fs, rest); err != nil {
			return err
		}
		path := *keyFile
		if path == "" {
			path = filepath.Join(audit.AuditDir(*dataDir), "signing.key")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("audit key: %w (the key is created when custos first records audit events)", err)
		}
		vkey, err := audit.VerifierKey(string(b))
		if err != nil {
			return fmt.Errorf("audit key: %s: %w", path, err)
		}
		fmt.Fprintln(stdout, vkey)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return nil
	}
	fmt.Fprint(stderr, auditUsage)
	return fmt.Errorf("audit: unknown command %q", cmd)
}

// parseNoArgs parses flags and refuses positional arguments.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

func auditVerify(ctx context.Context, dataDir, keyFile string, stdout, stderr io.Writer) error {
	var v note.Verifier
	if keyFile != "" {
		var err error
		if v, err = audit.ReadVerifierKey(keyFile); err != nil {
			return err
		}
	} else {
		b, err := os.ReadFile(filepath.Join(audit.AuditDir(dataDir), "signing.key"))
		if err != nil {
			return fmt.Errorf("audit verify: no --key and no signing key in the data dir: %w", err)
		}
		vkey, err := audit.VerifierKey(string(b))
		if err != nil {
			return err
		}
		if v, err = note.NewVerifier(vkey); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "note: verifier key taken from the data dir; pass --key with a copy kept elsewhere to rule out a replaced key")
	}
	rep, err := audit.Verify(ctx, dataDir, v)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	rep.Write(stdout)
	if !rep.OK() {
		return fmt.Errorf("%w: %s", audit.ErrVerify, rep.Problems[0].String())
	}
	return nil
}

func auditExport(ctx context.Context, dataDir, from, to, format, out string, stdout, stderr io.Writer) error {
	opts := audit.ExportOptions{Format: strings.ToLower(format)}
	var err error
	if from != "" {
		if opts.From, err = time.Parse(time.RFC3339Nano, from); err != nil {
			return fmt.Errorf("audit export: --from: %w", err)
		}
	}
	if to != "" {
		if opts.To, err = time.Parse(time.RFC3339Nano, to); err != nil {
			return fmt.Errorf("audit export: --to: %w", err)
		}
	}
	if opts.Format != audit.FormatCSV && opts.Format != audit.FormatJSON {
		return fmt.Errorf("audit export: --format %q is not csv or json", format)
	}
	w := stdout
	var f *os.File
	if out != "" {
		if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		w = f
	}
	n, err := audit.Export(ctx, w, dataDir, opts)
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if out != "" {
		fmt.Fprintf(stderr, "%d records written to %s\n", n, out)
	}
	return nil
}

func auditEvidence(ctx context.Context, dataDir, from, to, out, keyFile string, stdout, stderr io.Writer) error {
	if out == "" {
		return errors.New("audit evidence: --out DIR is required")
	}
	var opts audit.EvidenceOptions
	var err error
	if from != "" {
		if opts.From, err = time.Parse(time.RFC3339Nano, from); err != nil {
			return fmt.Errorf("audit evidence: --from: %w", err)
		}
	}
	if to != "" {
		if opts.To, err = time.Parse(time.RFC3339Nano, to); err != nil {
			return fmt.Errorf("audit evidence: --to: %w", err)
		}
	}
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("audit evidence: --key: %w", err)
		}
		opts.VerifierKey = strings.TrimSpace(string(b))
	} else {
		fmt.Fprintln(stderr, "note: verifier key taken from the data dir; pass --key with a copy kept elsewhere to rule out a replaced key")
	}
	sum, err := audit.WriteEvidence(ctx, dataDir, out, opts)
	if err != nil {
		if errors.Is(err, audit.ErrKey) && keyFile != "" {
			return fmt.Errorf("%w (--key %s)", err, keyFile)
		}
		return err
	}
	w := sum.Writes
	fmt.Fprintf(stdout, "evidence bundle written to %s\n", out)
	fmt.Fprintf(stdout, "records   %d in range (seq %d..%d), %d sessions\n", sum.Records, sum.FirstSeq, sum.LastSeq, sum.Sessions)
	fmt.Fprintf(stdout, "writes    %d: %d ran with an approval, %d ran without one, %d did not run\n",
		w.Total, w.RanWithApproval, w.RanWithoutApproval, w.NotRun)
	if w.ApprovalUnconfirmed > 0 {
		fmt.Fprintf(stdout, "WARNING   %d writes ran with an approval id the journal holds no approval for\n", w.ApprovalUnconfirmed)
	}
	fmt.Fprintf(stdout, "masking   %d PANs masked, %d SAD values dropped\n", sum.Masking.Masked, sum.Masking.SADDropped)
	if !sum.Verification.OK {
		fmt.Fprintf(stdout, "FAIL      the journal does not verify: %s (see %s)\n", sum.Verification.FirstProblem, audit.EvidenceVerificationFile)
		return fmt.Errorf("%w: %s; the bundle in %s says so", audit.ErrVerify, sum.Verification.FirstProblem, out)
	}
	fmt.Fprintf(stdout, "verify    OK: %d records, chain and checkpoint signatures verify\n", sum.Verification.RecordsVerified)
	return nil
}
