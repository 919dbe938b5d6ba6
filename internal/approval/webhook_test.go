package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hookServer records what a webhook receiver got and answers with the
// codes of answer, one per request (the last one repeats).
type hookServer struct {
	*httptest.Server
	mu      sync.Mutex
	got     []hookHit
	answer  []int
	headers map[string]string // set on every answer
	block   chan struct{}     // when set, handlers wait for it
}

type hookHit struct {
	at     time.Time
	header http.Header
	body   []byte
}

func newHookServer(t *testing.T, answer ...int) *hookServer {
	h := &hookServer{answer: answer, headers: map[string]string{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, hookHit{at: time.Now(), header: r.Header.Clone(), body: body})
		code := http.StatusNoContent
		if len(h.answer) > 0 {
			code = h.answer[0]
			if len(h.answer) > 1 {
				h.answer = h.answer[1:]
			}
		}
		for k, v := range h.headers {
			w.Header().Set(k, v)
		}
		block := h.block
		h.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) hits() []hookHit {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookHit(nil), h.got...)
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fastOpts retry at once, so tests run quickly.
func fastOpts(logs *logBuffer) NotifierOptions {
	return NotifierOptions{Logger: logs.logger(), MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		PublicURL: "https://custos.example/"}
}

// sampleEvent is a request of the agent with a literal in its detail that
// must never reach a webhook.
func sampleEvent(typ string, actor *Principal) Event {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	return Event{Type: typ, Actor: actor, At: now, Request: Request{
		ID: "apr_sample", Hash: "h", Requester: agent, Resource: "payments-db", Kind: KindSQL,
		Summary: "UPDATE cards SET holder = $1 WHERE id = $2", Detail: "UPDATE cards SET holder = 'Jane Doe' WHERE id = 42",
		ApproverGroups: []string{"dba"}, Quorum: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		State: StatePending, UpdatedAt: now, Version: 1,
	}}
}

func closeNotifier(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWebhookJSON(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t)
	logs := &logBuffer{}
	n := NewNotifier([]Webhook{{URL: srv.URL + "/hook"}}, fastOpts(logs))
	n.Notify(sampleEvent(EventRequested, &agent))
	ev := sampleEvent(EventDenied, &bob)
	ev.Request.State = StateDenied
	n.Notify(ev)
	closeNotifier(t, n)
	hits := srv.hits()
	if len(hits) != 2 {
		t.Fatalf("%d deliveries, want 2", len(hits))
	}
	var p WebhookPayload
	if err := json.Unmarshal(hits[0].body, &p); err != nil {
		t.Fatal(err)
	}
	want := WebhookPayload{
		Event: EventRequested, ID: "apr_sample", State: StatePending, Kind: KindSQL, Resource: "payments-db",
		Summary: "UPDATE cards SET holder = $1 WHERE id = $2", Requester: WebhookPrincipal{Sub: agent.Sub, Iss: agent.Iss, Act: agent.Act},
		ApproverGroups: []string{"dba"}, Quorum: 1, Actor: &WebhookPrincipal{Sub: agent.Sub, Iss: agent.Iss, Act: agent.Act},
		At: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC),
		Link: "https://custos.example/approvals/apr_sample",
	}
	gotJSON, _ := json.Marshal(p)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("payload\n%s\nwant\n%s", gotJSON, wantJSON)
	}
	for _, h := range hits {
		if bytes.Contains(h.body, []byte("Jane Doe")) || bytes.Contains(h.body, []byte("42")) {
			t.Fatalf("a literal reached the webhook: %s", h.body)
		}
		if h.header.Get("Content-Type") != "application/json" || h.header.Get(WebhookDeliveryHeader) == "" ||
			h.header.Get(WebhookSignatureHeader) != "" {
			t.Fatalf("headers %v", h.header)
		}
	}
	if hits[0].header.Get(WebhookEventHeader) != EventRequested || hits[1].header.Get(WebhookEventHeader) != EventDenied {
		t.Fatal("deliveries out of order")
	}
	if err := json.Unmarshal(hits[1].body, &p); err != nil || p.Actor == nil || p.Actor.Sub != bob.Sub || p.State != StateDenied {
		t.Fatalf("denial payload %s", hits[1].body)
	}
	// Expiry has no actor: null, not absent.
	if b, _ := n.encode(WebhookJSON, sampleEvent(EventExpired, nil)); !bytes.Contains(b, []byte(`"actor":null`)) {
		t.Fatalf("expiry payload %s", b)
	}
}

func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	t.Run("after 500s", func(t *testing.T) {
		t.Parallel()
		srv := newHookServer(t, 500, 503, 200)
		logs := &logBuffer{}
		n := NewNotifier([]Webhook{{URL: srv.URL}}, fastOpts(logs))
		n.Notify(sampleEvent(EventRequested, &agent))
		closeNotifier(t, n)
		hits := srv.hits()
		if len(hits) != 3 {
			t.Fatalf("%d attempts, want 3", len(hits))
		}
		if id := hits[0].header.Get(WebhookDeliveryHeader); hits[2].header.Get(WebhookDeliveryHeader) != id {
			t.Fatal("a retry changed the delivery id")
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			t.Fatalf("delivered, yet logged an error:\n%s", logs)
		}
	})
	t.Run("retry-after", func(t *testing.T) {
		t.Parallel()
		srv := newHookServer(t, 429, 200)
		srv.headers["Retry-After"] = "1"
		n := NewNotifier([]Webhook{{URL: srv.URL}}, fastOpts(&logBuffer{}))
		n.Notify(sampleEvent(EventRequested, &agent))
		closeNotifier(t, n)
		hits := srv.hits()
		if len(hits) != 2 {
			t.Fatalf("%d attempts, want 2", len(hits))
		}
		if gap := hits[1].at.Sub(hits[0].at); gap < time.Second {
			t.Fatalf("retried after %v, the receiver asked for 1s", gap)
		}
	})
	t.Run("give up", func(t *testing.T) {
		t.Parallel()
		srv := newHookServer(t, 500)
		logs := &logBuffer{}
		opts := fastOpts(logs)
		opts.MaxAttempts = 3
		n := NewNotifier([]Webhook{{URL: srv.URL + "/services/T000/B000/secret-token"}}, opts)
		n.Notify(sampleEvent(EventRequested, &agent))
		closeNotifier(t, n)
		if len(srv.hits()) != 3 {
			t.Fatalf("%d attempts, want 3", len(srv.hits()))
		}
		out := logs.String()
		if !strings.Contains(out, `level=ERROR msg="approval webhook delivery failed"`) || !strings.Contains(out, "attempts=3") ||
			!strings.Contains(out, "approval_id=apr_sample") {
			t.Fatalf("give up not logged:\n%s", out)
		}
		if strings.Contains(out, "secret-token") {
			t.Fatalf("the webhook's secret path was logged:\n%s", out)
		}
	})
	t.Run("refused for good", func(t *testing.T) {
		t.Parallel()
		srv := newHookServer(t, 400)
		logs := &logBuffer{}
		n := NewNotifier([]Webhook{{URL: srv.URL}}, fastOpts(logs))
		n.Notify(sampleEvent(EventRequested, &agent))
		closeNotifier(t, n)
		if len(srv.hits()) != 1 || !strings.Contains(logs.String(), "retryable=false") {
			t.Fatalf("%d attempts for a 400:\n%s", len(srv.hits()), logs)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		srv := newHookServer(t)
		url := srv.URL
		srv.Close()
		logs := &logBuffer{}
		opts := fastOpts(logs)
		opts.MaxAttempts = 2
		n := NewNotifier([]Webhook{{URL: url}}, opts)
		n.Notify(sampleEvent(EventRequested, &agent))
		closeNotifier(t, n)
		if !strings.Contains(logs.String(), "attempts=2") {
			t.Fatalf("unreachable webhook:\n%s", logs)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {" 10 ", 10 * time.Second}, {"0", 0}, {"-5", 0}, {"soon", 0},
		{"99999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tc := range cases {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestWebhookSlack(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t)
	n := NewNotifier([]Webhook{{URL: srv.URL, Format: WebhookSlack}}, fastOpts(&logBuffer{}))
	ev := sampleEvent(EventRequested, &agent)
	ev.Request.Summary = "SELECT a < b & c > d ```"
	n.Notify(ev)
	closeNotifier(t, n)
	hits := srv.hits()
	if len(hits) != 1 {
		t.Fatalf("%d deliveries", len(hits))
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type     string            `json:"type"`
			Text     *slackText        `json:"text"`
			Elements []json.RawMessage `json:"elements"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(hits[0].body, &msg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"apr_sample", "agent-7 (for alice@example.com)", "payments-db", "dba", "<https://custos.example/approvals/apr_sample|open>"} {
		if !strings.Contains(msg.Text, want) {
			t.Errorf("text %q lacks %q", msg.Text, want)
		}
	}
	if len(msg.Blocks) != 4 || msg.Blocks[0].Type != "section" || msg.Blocks[3].Type != "actions" {
		t.Fatalf("blocks %s", hits[0].body)
	}
	code := msg.Blocks[1].Text.Text
	if !strings.Contains(code, "a &lt; b &amp; c &gt; d") || strings.Count(code, "```") != 2 {
		t.Fatalf("summary block %q", code)
	}
	if !bytes.Contains(hits[0].body, []byte(`"url":"https://custos.example/approvals/apr_sample"`)) {
		t.Fatalf("no button link: %s", hits[0].body)
	}
	if bytes.Contains(hits[0].body, []byte("Jane Doe")) {
		t.Fatal("a literal reached Slack")
	}
	// Every event type renders.
	for _, typ := range eventTypes {
		m := n.slackMessage(sampleEvent(typ, &bob))
		if m.Text == "" || !strings.Contains(m.Text, "apr_sample") {
			t.Errorf("%s: text %q", typ, m.Text)
		}
	}
}

func TestWebhookSignature(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t)
	const secret = "s3cret"
	n := NewNotifier([]Webhook{{URL: srv.URL, Secret: secret}, {URL: srv.URL, Format: WebhookSlack, Secret: secret}}, fastOpts(&logBuffer{}))
	n.Notify(sampleEvent(EventRequested, &agent))
	closeNotifier(t, n)
	hits := srv.hits()
	if len(hits) != 2 {
		t.Fatalf("%d deliveries", len(hits))
	}
	for _, h := range hits {
		ts, sig := h.header.Get(WebhookTimestampHeader), h.header.Get(WebhookSignatureHeader)
		if ts == "" || !strings.HasPrefix(sig, "sha256=") {
			t.Fatalf("headers %v", h.header)
		}
		if !hmac.Equal([]byte(sig), []byte(SignWebhook(secret, ts, h.body))) {
			t.Fatal("signature does not verify")
		}
		if hmac.Equal([]byte(sig), []byte(SignWebhook("other", ts, h.body))) ||
			hmac.Equal([]byte(sig), []byte(SignWebhook(secret, ts, append(h.body, ' ')))) ||
			hmac.Equal([]byte(sig), []byte(SignWebhook(secret, ts+"1", h.body))) {
			t.Fatal("signature verifies what it should not")
		}
	}
	// A known vector, so receivers in other languages can check theirs.
	// (printf '1700000000.{}' | openssl dgst -sha256 -hmac key)
	if got := SignWebhook("key", "1700000000", []byte(`{}`)); got != "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae" {
		t.Fatalf("vector: %s", got)
	}
}

func TestWebhookCloseDrains(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t, 500, 200)
	n := NewNotifier([]Webhook{{URL: srv.URL}}, fastOpts(&logBuffer{}))
	for range 5 {
		n.Notify(sampleEvent(EventApproved, &bob))
	}
	closeNotifier(t, n)
	if got := len(srv.hits()); got != 6 { // one retry, five deliveries
		t.Fatalf("%d attempts after Close, want 6", got)
	}
	n.Notify(sampleEvent(EventApproved, &bob)) // after Close: dropped, no panic
	closeNotifier(t, n)                        // a second Close is harmless
}

func TestWebhookCloseGivesUp(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t)
	srv.block = make(chan struct{})
	defer close(srv.block)
	logs := &logBuffer{}
	n := NewNotifier([]Webhook{{URL: srv.URL}}, fastOpts(logs))
	for range 3 {
		n.Notify(sampleEvent(EventApproved, &bob))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := n.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("close took %v", d)
	}
	if out := logs.String(); !strings.Contains(out, "abandoned at close") || !strings.Contains(out, "events=2") {
		t.Fatalf("abandoned events not logged:\n%s", out)
	}
}

// TestWebhookNeverBlocks: a receiver that hangs fills its queue; Notify
// drops (logged) instead of waiting, and other webhooks still deliver.
func TestWebhookNeverBlocks(t *testing.T) {
	t.Parallel()
	stuck := newHookServer(t)
	stuck.block = make(chan struct{})
	fine := newHookServer(t)
	logs := &logBuffer{}
	opts := fastOpts(logs)
	opts.QueueSize = 2
	n := NewNotifier([]Webhook{{URL: stuck.URL}, {URL: fine.URL}}, opts)
	// Each event reaches the working webhook before the next is sent, so
	// only the stuck webhook's queue fills up; Notify itself never waits.
	var inNotify time.Duration
	for i := range 50 {
		start := time.Now()
		n.Notify(sampleEvent(EventApproved, &bob))
		inNotify += time.Since(start)
		eventually(t, "a delivery to the working webhook", func() bool { return len(fine.hits()) == i+1 })
	}
	if inNotify > 2*time.Second {
		t.Fatalf("50 Notify calls took %v", inNotify)
	}
	if !strings.Contains(logs.String(), "approval webhook queue full; event dropped") {
		t.Fatalf("drops not logged:\n%s", logs)
	}
	close(stuck.block)
	closeNotifier(t, n)
}

func TestWebhookValidate(t *testing.T) {
	cases := []struct {
		hook Webhook
		ok   bool
	}{
		{Webhook{URL: "https://hooks.example/x"}, true},
		{Webhook{URL: "http://127.0.0.1:9/x", Format: WebhookSlack, Secret: "s"}, true},
		{Webhook{URL: "https://hooks.example/x", Events: []string{EventRequested, EventDecided}}, true},
		{Webhook{URL: ""}, false},
		{Webhook{URL: "ftp://hooks.example/x"}, false},
		{Webhook{URL: "https:///x"}, false},
		{Webhook{URL: "://bad"}, false},
		{Webhook{URL: "https://hooks.example/x", Format: "xml"}, false},
		{Webhook{URL: "https://hooks.example/x", Events: []string{"created"}}, false},
	}
	for _, tc := range cases {
		err := tc.hook.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidWebhook)) {
			t.Errorf("%+v: %v", tc.hook, err)
		}
	}
	logs := &logBuffer{}
	n := NewNotifier([]Webhook{{URL: "ftp://x"}}, NotifierOptions{Logger: logs.logger()})
	if len(n.workers) != 0 || !strings.Contains(logs.String(), "approval webhook left out") {
		t.Fatalf("an invalid webhook was kept:\n%s", logs)
	}
	closeNotifier(t, n)
}

func TestWebhookEventFilter(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t)
	n := NewNotifier([]Webhook{{URL: srv.URL, Events: []string{EventRequested, EventDecided}}}, fastOpts(&logBuffer{}))
	for _, typ := range eventTypes {
		n.Notify(sampleEvent(typ, &bob))
	}
	closeNotifier(t, n)
	var got []string
	for _, h := range srv.hits() {
		got = append(got, h.header.Get(WebhookEventHeader))
	}
	if strings.Join(got, ",") != "requested,decided" {
		t.Fatalf("events %v", got)
	}
}

// TestWebhookWithService plugs a Notifier into a Service: events arrive in
// commit order, and a webhook that always fails changes nothing for the
// request.
func TestWebhookWithService(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		srv := newHookServer(t)
		broken := newHookServer(t, 500)
		opts := fastOpts(&logBuffer{})
		opts.MaxAttempts = 2
		n := NewNotifier([]Webhook{{URL: srv.URL}, {URL: broken.URL, Format: WebhookSlack}}, opts)
		st, _ := openStore(t, b)
		c := newClock()
		s := newService(t, st, Options{Now: c.Now, OnEvent: n.Notify})
		r := must(t)(s.Request(t.Context(), newReq(func(nr *NewRequest) { nr.Quorum = 2 })))
		must(t)(s.Approve(t.Context(), r.ID, bob, ""))
		must(t)(s.Approve(t.Context(), r.ID, carol, ""))
		if got := must(t)(s.Wait(t.Context(), r.ID)); got.State != StateApproved {
			t.Fatalf("state %s", got.State)
		}
		must(t)(s.Consume(t.Context(), r.ID, r.Hash))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		closeNotifier(t, n)
		var got []string
		for _, h := range srv.hits() {
			var p WebhookPayload
			if err := json.Unmarshal(h.body, &p); err != nil {
				t.Fatal(err)
			}
			if p.ID != r.ID {
				t.Fatalf("payload for %s", p.ID)
			}
			got = append(got, p.Event+":"+p.Actor.Sub)
		}
		want := "requested:agent-7,approved:bob@example.com,approved:carol@example.com,decided:carol@example.com,consumed:agent-7"
		if strings.Join(got, ",") != want {
			t.Fatalf("events %v, want %s", got, want)
		}
		if len(broken.hits()) != 10 {
			t.Fatalf("%d attempts at the broken webhook, want 2 per event", len(broken.hits()))
		}
	})
}
