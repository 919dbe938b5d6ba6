package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/approvalapi"
)

const approvalsUsage = `usage: custos approvals <command> [flags]

commands:
  list [--state S] [--limit N] [--json]   requests you may see (default state pending; "all" for every state)
  show ID [--json]                        one request: statement, requester, resource, flags, votes
  approve ID [--reason R]                 approve a request
  deny ID --reason R                      deny a request

Every command talks to custos' admin listener: --admin-url (default $CUSTOS_ADMIN_URL) with an
OIDC token, --token (default $CUSTOS_TOKEN).
`

// runApprovals lists, shows, approves and denies parked requests through
// the admin API.
func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, approvalsUsage)
		return errors.New("approvals: a command is required (list, show, approve, deny)")
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("custos approvals "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminURL := fs.String("admin-url", os.Getenv("CUSTOS_ADMIN_URL"), "admin listener URL (default $CUSTOS_ADMIN_URL)")
	token := fs.String("token", os.Getenv("CUSTOS_TOKEN"), "OIDC token of the approver (default $CUSTOS_TOKEN)")
	var (
		state, reason string
		limit         int
		asJSON        bool
	)
	nargs := 1
	switch cmd {
	case "list":
		nargs = 0
		fs.StringVar(&state, "state", string(approval.StatePending), "state to list: pending, approved, denied, expired, withdrawn, consumed or all")
		fs.IntVar(&limit, "limit", 0, "at most this many requests (default the server's)")
		fs.BoolVar(&asJSON, "json", false, "print JSON (an array of requests)")
	case "show":
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	case "approve":
		fs.StringVar(&reason, "reason", "", "why (optional)")
	case "deny":
		fs.StringVar(&reason, "reason", "", "why (required)")
	case "help", "-h", "--help":
		fmt.Fprint(stdout, approvalsUsage)
		return nil
	default:
		fmt.Fprint(stderr, approvalsUsage)
		return fmt.Errorf("approvals: unknown command %q", cmd)
	}
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != nargs {
		if nargs == 0 {
			return fmt.Errorf("approvals %s: unexpected argument %q", cmd, pos[0])
		}
		return fmt.Errorf("approvals %s: one request id is required, got %d arguments", cmd, len(pos))
	}
	if cmd == "deny" && strings.TrimSpace(reason) == "" {
		return errors.New("approvals deny: --reason is required")
	}
	if limit < 0 {
		return errors.New("approvals list: --limit must not be negative")
	}
	c, err := approvalsClient(*adminURL, *token)
	if err != nil {
		return err
	}
	switch cmd {
	case "list":
		list, err := c.List(ctx, approvalapi.ListOptions{State: state, Limit: limit})
		if err != nil {
			return approvalsError(cmd, err)
		}
		if asJSON {
			return printJSON(stdout, list)
		}
		printApprovalList(stdout, list, state, time.Now())
		return nil
	case "show":
		r, err := c.Get(ctx, pos[0])
		if err != nil {
			return approvalsError(cmd, err)
		}
		if asJSON {
			return printJSON(stdout, r)
		}
		printApproval(stdout, r, time.Now())
		return nil
	case "approve":
		r, err := c.Approve(ctx, pos[0], reason)
		if err != nil {
			return approvalsError(cmd, err)
		}
		if r.State == approval.StateApproved {
			fmt.Fprintf(stdout, "approved %s (%d of %d approvals): the statement may now run, once\n", r.ID, len(r.Approvals), r.Quorum)
		} else {
			fmt.Fprintf(stdout, "recorded your approval of %s (%d of %d approvals); it is %s\n", r.ID, len(r.Approvals), r.Quorum, r.State)
		}
		return nil
	default: // deny
		r, err := c.Deny(ctx, pos[0], reason)
		if err != nil {
			return approvalsError(cmd, err)
		}
		fmt.Fprintf(stdout, "denied %s\n", r.ID)
		return nil
	}
}

// parseInterspersed parses flags given before, between and after the
// positional arguments, which the flag package alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func approvalsClient(adminURL, token string) (*approvalapi.Client, error) {
	if adminURL == "" {
		return nil, errors.New("approvals: no admin URL: set CUSTOS_ADMIN_URL or pass --admin-url (custos dev writes it to .custos/dev.env)")
	}
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("approvals: admin URL %q is not http(s)://host:port", adminURL)
	}
	if strings.TrimSpace(token) == "" {
		return nil, errors.New("approvals: no token: set CUSTOS_TOKEN or pass --token (with custos dev: export CUSTOS_TOKEN=$(custos token --sub YOU --groups dba))")
	}
	return &approvalapi.Client{
		BaseURL:    adminURL,
		Token:      strings.TrimSpace(token),
		HTTPClient: &http.Client{Timeout: 30 * time.Second},
	}, nil
}

// approvalsError words a failed call for the command line.
func approvalsError(cmd string, err error) error {
	var apiErr *approvalapi.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized {
		return fmt.Errorf("approvals %s: the admin API refused the token: %w", cmd, err)
	}
	return fmt.Errorf("approvals %s: %w", cmd, err)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printApprovalList(w io.Writer, list []approval.Request, state string, now time.Time) {
	if len(list) == 0 {
		if state == approvalapi.StateAll {
			fmt.Fprintln(w, "no requests")
		} else {
			fmt.Fprintf(w, "no %s requests\n", state)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tRESOURCE\tREQUESTER\tVOTES\tEXPIRES\tSTATEMENT")
	for _, r := range list {
		requester := r.Requester.Sub
		if r.Requester.Act != "" {
			requester += " for " + r.Requester.Act
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", r.ID, r.State, oneLine(r.Resource, 24), oneLine(requester, 32),
			len(r.Approvals), r.Quorum, expiresIn(r, now), oneLine(r.Summary, 60))
	}
	_ = tw.Flush()
}

func printApproval(w io.Writer, r *approval.Request, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", r.ID)
	row("state", string(r.State))
	row("resource", r.Resource)
	row("kind", r.Kind)
	row("requester", r.Requester.String())
	row("requester groups", strings.Join(r.Requester.Groups, ", "))
	row("statement", oneLine(r.Summary, 0))
	row("flags", strings.Join(r.Flags, ", "))
	for _, reason := range r.Reasons {
		row("reason", oneLine(reason, 0))
	}
	row("approver groups", strings.Join(r.ApproverGroups, ", "))
	row("approvals", fmt.Sprintf("%d of %d", len(r.Approvals), r.Quorum))
	for _, v := range r.Approvals {
		row("approved by", vote(v))
	}
	if r.Denial != nil {
		row("denied by", vote(*r.Denial))
	}
	row("created", r.CreatedAt.UTC().Format(time.RFC3339))
	row("expires", r.ExpiresAt.UTC().Format(time.RFC3339)+" ("+expiresIn(*r, now)+")")
	row("note", r.Note)
	row("decision", r.DecisionID)
	row("session", r.SessionID)
	row("hash", r.Hash)
	_ = tw.Flush()
	if r.Detail != "" {
		fmt.Fprintf(w, "\nfull text (card numbers masked):\n%s\n", r.Detail)
	}
}

func vote(v approval.Vote) string {
	s := v.By.String() + " at " + v.At.UTC().Format(time.RFC3339)
	if v.Reason != "" {
		s += ": " + oneLine(v.Reason, 0)
	}
	return s
}

// expiresIn says when a live request expires, relative to now.
func expiresIn(r approval.Request, now time.Time) string {
	if r.State.Terminal() {
		return "-"
	}
	d := r.ExpiresAt.Sub(now).Round(time.Second)
	if d <= 0 {
		return "now"
	}
	return "in " + d.String()
}

// oneLine flattens whitespace and shortens s to n runes (0: no limit), for
// a table cell.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); n > 0 && len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
