package approvalapi

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/custos-dev/custos/internal/approval"
)

// chromiumPath is where Debian's chromium package (scripts/deps.sh) puts
// the browser.
const chromiumPath = "/usr/bin/chromium"

// browser starts headless Chromium and returns its context. Without the
// browser the test is skipped, except under CI, where it must run.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the browser test needs %s under CI (scripts/deps.sh installs the chromium package): %v", chromiumPath, err)
		}
		t.Skipf("browser test skipped: %s not found; install it with `apt-get install chromium` or `make deps`", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// TestBrowser drives the web page in headless Chromium: sign in with a
// token, see the pending requests, open one, approve it (or deny it with a
// reason), see the result, and find the decision in the service.
func TestBrowser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	browserCtx := browser(t)
	approveID, denyID := e.park(t, 1, 0), e.park(t, 1, 0)

	// signIn opens the page in a new tab with cookies of its own, signs in
	// with tok and waits for the pending list, which must show ids.
	signIn := func(t *testing.T, tok string, ids ...string) context.Context {
		t.Helper()
		tab, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		if err := chromedp.Do(tab); err != nil { // open the tab
			t.Fatalf("open a tab: %v", err)
		}
		tab, cancelT := context.WithTimeout(tab, 60*time.Second)
		t.Cleanup(cancelT)
		err := chromedp.Do(tab,
			chromedp.Navigate(e.srv.URL+"/approvals"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SetValue(chromedp.CSS("#token"), tok),
			chromedp.Click(chromedp.CSS(`#signin button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS("#requests")),
		)
		if err != nil {
			t.Fatalf("sign in: %v", err)
		}
		list := text(t, tab, "#requests")
		for _, id := range ids {
			if !strings.Contains(list, id) {
				t.Errorf("pending list lacks %s:\n%s", id, list)
			}
		}
		cookies, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.cookie`))
		if err != nil || cookies != "" {
			t.Errorf("the session cookie is readable by scripts: %q %v", cookies, err)
		}
		// The style sheet is allowed by the page's CSP.
		bg, err := chromedp.Run(tab, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("header")).backgroundColor`))
		if err != nil || bg != "rgb(29, 39, 51)" {
			t.Errorf("header background %q (%v): the style sheet did not apply", bg, err)
		}
		return tab
	}

	t.Run("approve", func(t *testing.T) {
		tab := signIn(t, e.token(t, bob), approveID, denyID)
		err := chromedp.Do(tab,
			chromedp.Click(chromedp.CSS(`a[href="/approvals/`+approveID+`"]`)),
			chromedp.WaitVisible(chromedp.CSS("#approve")),
		)
		if err != nil {
			t.Fatalf("open the request: %v", err)
		}
		if detail := text(t, tab, "#detail"); !strings.Contains(detail, maskedPAN) || strings.Contains(detail, clearPAN) {
			t.Errorf("detail %q: want the PAN masked", detail)
		}
		if who := text(t, tab, "#who"); !strings.HasPrefix(who, "bob (") {
			t.Errorf("signed in as %q", who)
		}
		err = chromedp.Do(tab,
			chromedp.SendKeys(chromedp.CSS("#approve-reason"), "checked with the team"),
			chromedp.Click(chromedp.CSS("#approve")),
			chromedp.WaitVisible(chromedp.CSS("#notice")),
		)
		if err != nil {
			t.Fatalf("approve: %v", err)
		}
		if notice, state := text(t, tab, "#notice"), text(t, tab, "#state"); !strings.Contains(notice, "You approved this request") || state != "approved" {
			t.Errorf("result: notice %q, state %q", notice, state)
		}
		r := e.state(t, approveID)
		if r.State != approval.StateApproved || len(r.Approvals) != 1 || r.Approvals[0].By.Sub != "bob" || r.Approvals[0].Reason != "checked with the team" {
			t.Errorf("service: state %s, approvals %+v", r.State, r.Approvals)
		}
	})

	t.Run("deny", func(t *testing.T) {
		tab := signIn(t, e.token(t, carol), denyID)
		err := chromedp.Do(tab,
			chromedp.Click(chromedp.CSS(`a[href="/approvals/`+denyID+`"]`)),
			chromedp.WaitVisible(chromedp.CSS("#deny")),
			chromedp.SendKeys(chromedp.CSS("#deny-reason"), "not during the change freeze"),
			chromedp.Click(chromedp.CSS("#deny")),
			chromedp.WaitVisible(chromedp.CSS("#notice")),
		)
		if err != nil {
			t.Fatalf("deny: %v", err)
		}
		notice, state, reason := text(t, tab, "#notice"), text(t, tab, "#state"), text(t, tab, "#denial-reason")
		if !strings.Contains(notice, "You denied this request") || state != "denied" || reason != "not during the change freeze" {
			t.Errorf("result: notice %q, state %q, reason %q", notice, state, reason)
		}
		r := e.state(t, denyID)
		if r.State != approval.StateDenied || r.Denial == nil || r.Denial.By.Sub != "carol" || r.Denial.Reason != "not during the change freeze" {
			t.Errorf("service: state %s, denial %+v", r.State, r.Denial)
		}
	})
}

// text returns the visible text of the first element matching a CSS
// selector.
func text(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}
