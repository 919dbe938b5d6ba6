package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Webhook formats.
const (
	// WebhookJSON posts a WebhookPayload.
	WebhookJSON = "json"
	// WebhookSlack posts a Slack incoming-webhook message ({"text", "blocks"}).
	WebhookSlack = "slack"
)

// Headers of a webhook delivery.
const (
	// WebhookEventHeader names the event type.
	WebhookEventHeader = "X-Custos-Event"
	// WebhookDeliveryHeader identifies a delivery; retries of it keep the
	// same value, so receivers can drop duplicates.
	WebhookDeliveryHeader = "X-Custos-Delivery"
	// WebhookTimestampHeader is the Unix time, in seconds, of the attempt.
	WebhookTimestampHeader = "X-Custos-Timestamp"
	// WebhookSignatureHeader is SignWebhook of the attempt, sent when the
	// webhook has a Secret.
	WebhookSignatureHeader = "X-Custos-Signature"
)

// Defaults of NotifierOptions.
const (
	DefaultWebhookAttempts      = 6
	DefaultWebhookMinBackoff    = time.Second
	DefaultWebhookMaxBackoff    = time.Minute
	DefaultWebhookMaxRetryAfter = 5 * time.Minute
	DefaultWebhookQueueSize     = 1024
	DefaultWebhookTimeout       = 10 * time.Second
)

// maxWebhookSummary bounds the statement summary a notification carries.
const maxWebhookSummary = 1000

// ErrInvalidWebhook is returned by Webhook.Validate.
var ErrInvalidWebhook = errors.New("approval: invalid webhook")

// Webhook is one notification endpoint, as configured.
type Webhook struct {
	// URL receives a POST per event: http or https.
	URL string
	// Format is WebhookJSON (the default when "") or WebhookSlack.
	Format string
	// Secret, when set, signs each delivery (WebhookSignatureHeader).
	Secret string
	// Events selects the event types (Event* constants) to send; empty
	// sends every event.
	Events []string
}

// Validate reports what is wrong with w, as ErrInvalidWebhook.
func (w Webhook) Validate() error {
	u, err := url.Parse(w.URL)
	switch {
	case err != nil:
		return fmt.Errorf("%w: url: %w", ErrInvalidWebhook, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: url %s: scheme must be http or https", ErrInvalidWebhook, w.redacted())
	case u.Host == "":
		return fmt.Errorf("%w: url %s: no host", ErrInvalidWebhook, w.redacted())
	case w.Format != "" && w.Format != WebhookJSON && w.Format != WebhookSlack:
		return fmt.Errorf("%w: format %q is neither %q nor %q", ErrInvalidWebhook, w.Format, WebhookJSON, WebhookSlack)
	}
	for _, e := range w.Events {
		if !slices.Contains(eventTypes, e) {
			return fmt.Errorf("%w: unknown event %q", ErrInvalidWebhook, e)
		}
	}
	return nil
}

var eventTypes = []string{EventRequested, EventApproved, EventDecided, EventDenied, EventExpired, EventWithdrawn, EventConsumed}

// redacted is the URL without path, query or credentials: Slack webhook
// URLs carry their secret in the path, and logs must not.
func (w Webhook) redacted() string {
	u, err := url.Parse(w.URL)
	if err != nil || u.Host == "" {
		return "(unparsable url)"
	}
	return u.Scheme + "://" + u.Host
}

func (w Webhook) wants(typ string) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, typ)
}

// NotifierOptions configure a Notifier.
type NotifierOptions struct {
	// Logger receives delivery failures; nil discards.
	Logger *slog.Logger
	// Client posts the deliveries; nil is a client with
	// DefaultWebhookTimeout that does not follow redirects.
	Client *http.Client
	// PublicURL is the base of links to a request: PublicURL +
	// "/approvals/" + id. Empty leaves links out.
	PublicURL string
	// MaxAttempts bounds the attempts per delivery; 0 is
	// DefaultWebhookAttempts.
	MaxAttempts int
	// MinBackoff is the pause after the first failed attempt, doubled
	// after each further one up to MaxBackoff; 0 are the defaults.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps the pause a receiver asks for with Retry-After
	// (the pause is the longer of it and the backoff); 0 is
	// DefaultWebhookMaxRetryAfter.
	MaxRetryAfter time.Duration
	// QueueSize bounds each webhook's queue; when it is full new events
	// for that webhook are dropped and logged. 0 is
	// DefaultWebhookQueueSize.
	QueueSize int
	// Now is the clock of signatures and Retry-After dates; nil is
	// time.Now.
	Now func() time.Time
}

// Notifier posts approval events to webhooks. Notify never blocks: each
// webhook has its own queue and goroutine, delivers in order, and retries
// with exponential backoff; a webhook that keeps failing delays only its
// own notifications, and never a request. Plug Notify into
// Options.OnEvent; at shutdown close the Service first (it hands over its
// last events), then the Notifier.
type Notifier struct {
	opts    NotifierOptions
	log     *slog.Logger
	workers []*hookWorker

	mu     sync.RWMutex // guards closed against Notify's sends
	closed bool

	ctx    context.Context // cancelled when Close gives up draining
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type hookWorker struct {
	index   int
	hook    Webhook
	q       chan delivery
	dropped atomic.Int64
}

// delivery is one event for one webhook, encoded once.
type delivery struct {
	id        string
	event     string
	requestID string
	body      []byte
}

// NewNotifier starts a Notifier for hooks. Hooks that fail Validate are
// logged and left out.
func NewNotifier(hooks []Webhook, opts NotifierOptions) *Notifier {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			Timeout: DefaultWebhookTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultWebhookAttempts
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultWebhookMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultWebhookMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = DefaultWebhookMaxRetryAfter
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultWebhookQueueSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.PublicURL = strings.TrimRight(opts.PublicURL, "/")
	n := &Notifier{opts: opts, log: opts.Logger}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for i, h := range hooks {
		if err := h.Validate(); err != nil {
			n.log.Error("approval webhook left out", slog.Int("webhook_index", i), slog.Any("error", err))
			continue
		}
		if h.Format == "" {
			h.Format = WebhookJSON
		}
		w := &hookWorker{index: i, hook: h, q: make(chan delivery, opts.QueueSize)}
		n.workers = append(n.workers, w)
		n.wg.Add(1)
		go n.run(w)
	}
	return n
}

// Notify queues ev for every webhook that wants it and returns at once. A
// full queue drops ev for that webhook (logged); after Close, Notify drops
// everything.
func (n *Notifier) Notify(ev Event) {
	if n == nil {
		return
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		n.log.Warn("approval webhook: event after close dropped", slog.String("event", ev.Type),
			slog.String("approval_id", ev.Request.ID))
		return
	}
	bodies := map[string][]byte{}
	id := deliveryID()
	for _, w := range n.workers {
		if !w.hook.wants(ev.Type) {
			continue
		}
		body, ok := bodies[w.hook.Format]
		if !ok {
			var err error
			if body, err = n.encode(w.hook.Format, ev); err != nil {
				n.log.Error("approval webhook: event not encoded", slog.String("event", ev.Type),
					slog.String("approval_id", ev.Request.ID), slog.Any("error", err))
				return
			}
			bodies[w.hook.Format] = body
		}
		select {
		case w.q <- delivery{id: id, event: ev.Type, requestID: ev.Request.ID, body: body}:
		default:
			w.dropped.Add(1)
			n.log.Error("approval webhook queue full; event dropped", slog.Int("webhook_index", w.index),
				slog.String("webhook", w.hook.redacted()), slog.String("event", ev.Type),
				slog.String("approval_id", ev.Request.ID))
		}
	}
}

// Close stops taking events and delivers what is queued, retries
// included, until ctx is done; then it abandons the rest (logged) and
// returns ctx.Err().
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		for _, w := range n.workers {
			close(w.q)
		}
	}
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		n.cancel()
		return nil
	case <-ctx.Done():
	}
	n.cancel()
	<-done
	return ctx.Err()
}

func (n *Notifier) run(w *hookWorker) {
	defer n.wg.Done()
	abandoned := 0
	for d := range w.q {
		if n.ctx.Err() != nil {
			abandoned++
			continue
		}
		n.deliver(w, d)
	}
	if abandoned > 0 {
		n.log.Error("approval webhook: undelivered events abandoned at close", slog.Int("webhook_index", w.index),
			slog.String("webhook", w.hook.redacted()), slog.Int("events", abandoned))
	}
}

// deliver posts d until it is accepted, the receiver refuses it for good,
// the attempts run out or Close gives up.
func (n *Notifier) deliver(w *hookWorker, d delivery) {
	attrs := func(more ...any) []any {
		return append([]any{slog.Int("webhook_index", w.index), slog.String("webhook", w.hook.redacted()),
			slog.String("event", d.event), slog.String("approval_id", d.requestID), slog.String("delivery_id", d.id)}, more...)
	}
	for attempt := 1; ; attempt++ {
		retryAfter, retry, err := n.post(w.hook, d)
		if err == nil {
			n.log.Debug("approval webhook delivered", attrs(slog.Int("attempts", attempt))...)
			return
		}
		if !retry || attempt >= n.opts.MaxAttempts || n.ctx.Err() != nil {
			n.log.Error("approval webhook delivery failed", attrs(slog.Int("attempts", attempt),
				slog.Bool("retryable", retry), slog.Any("error", err))...)
			return
		}
		pause := n.opts.MinBackoff << (attempt - 1)
		if pause <= 0 || pause > n.opts.MaxBackoff { // << overflows to <= 0
			pause = n.opts.MaxBackoff
		}
		pause = max(pause, min(retryAfter, n.opts.MaxRetryAfter))
		n.log.Warn("approval webhook delivery failed; retrying", attrs(slog.Int("attempts", attempt),
			slog.Duration("retry_in", pause), slog.Any("error", err))...)
		t := time.NewTimer(pause)
		select {
		case <-n.ctx.Done():
			t.Stop()
			n.log.Error("approval webhook delivery failed", attrs(slog.Int("attempts", attempt),
				slog.Bool("retryable", true), slog.Any("error", err))...)
			return
		case <-t.C:
		}
	}
}

// post makes one attempt. It returns whether another may succeed, and the
// pause the receiver asked for.
func (n *Notifier) post(h Webhook, d delivery) (retryAfter time.Duration, retry bool, err error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, h.URL, bytes.NewReader(d.body))
	if err != nil {
		return 0, false, fmt.Errorf("build request: %w", err)
	}
	ts := strconv.FormatInt(n.opts.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "custos-approval-webhook")
	req.Header.Set(WebhookEventHeader, d.event)
	req.Header.Set(WebhookDeliveryHeader, d.id)
	req.Header.Set(WebhookTimestampHeader, ts)
	if h.Secret != "" {
		req.Header.Set(WebhookSignatureHeader, SignWebhook(h.Secret, ts, d.body))
	}
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may hold a secret
		}
		return 0, true, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, false, nil
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return parseRetryAfter(resp.Header.Get("Retry-After"), n.opts.Now()), true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return 0, false, fmt.Errorf("webhook answered %s", resp.Status)
	}
}

// parseRetryAfter reads a Retry-After value: seconds or an HTTP date.
// Anything else, or a time past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// SignWebhook returns the signature of a delivery: "sha256=" and the hex
// HMAC-SHA256, keyed with the webhook's secret, of the timestamp header, a
// dot and the body. Receivers recompute it, compare in constant time, and
// refuse old timestamps.
func SignWebhook(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func deliveryID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "dlv_" + idEncoding.EncodeToString(b[:])
}

// WebhookPayload is the body of a WebhookJSON delivery. It names the
// request and who did what; it holds the normalized summary, never the
// statement's literals or parameters.
type WebhookPayload struct {
	Event          string            `json:"event"`
	ID             string            `json:"id"`
	State          State             `json:"state"`
	Kind           string            `json:"kind"`
	Resource       string            `json:"resource"`
	Summary        string            `json:"summary"`
	Requester      WebhookPrincipal  `json:"requester"`
	ApproverGroups []string          `json:"approver_groups"`
	Quorum         int               `json:"quorum"`
	Approvals      int               `json:"approvals"`
	Actor          *WebhookPrincipal `json:"actor"`
	At             time.Time         `json:"at"`
	ExpiresAt      time.Time         `json:"expires_at"`
	Link           string            `json:"link,omitempty"`
}

// WebhookPrincipal names a person in a WebhookPayload.
type WebhookPrincipal struct {
	Sub string `json:"sub"`
	Iss string `json:"iss"`
	Act string `json:"act,omitempty"`
}

func webhookPrincipal(p Principal) WebhookPrincipal {
	return WebhookPrincipal{Sub: p.Sub, Iss: p.Iss, Act: p.Act}
}

// link is the approver page of request id, or "" without a PublicURL.
func (n *Notifier) link(id string) string {
	if n.opts.PublicURL == "" {
		return ""
	}
	return n.opts.PublicURL + "/approvals/" + url.PathEscape(id)
}

func (n *Notifier) encode(format string, ev Event) ([]byte, error) {
	if format == WebhookSlack {
		return json.Marshal(n.slackMessage(ev))
	}
	r := &ev.Request
	p := WebhookPayload{
		Event:          ev.Type,
		ID:             r.ID,
		State:          r.State,
		Kind:           r.Kind,
		Resource:       r.Resource,
		Summary:        truncate(r.Summary, maxWebhookSummary),
		Requester:      webhookPrincipal(r.Requester),
		ApproverGroups: slices.Clone(r.ApproverGroups),
		Quorum:         r.Quorum,
		Approvals:      len(r.Approvals),
		At:             ev.At.UTC(),
		ExpiresAt:      r.ExpiresAt.UTC(),
		Link:           n.link(r.ID),
	}
	if p.ApproverGroups == nil {
		p.ApproverGroups = []string{}
	}
	if ev.Actor != nil {
		a := webhookPrincipal(*ev.Actor)
		p.Actor = &a
	}
	return json.Marshal(p)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Slack incoming-webhook message: text is the notification's fallback,
// blocks its layout (https://api.slack.com/messaging/webhooks).
type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type     string     `json:"type"`
	Text     *slackText `json:"text,omitempty"`
	Elements []any      `json:"elements,omitempty"`
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackButton struct {
	Type string    `json:"type"`
	Text slackText `json:"text"`
	URL  string    `json:"url"`
}

// slackEscape escapes what Slack's mrkdwn treats as markup.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackWho(p Principal) string {
	s := p.Sub
	if p.Act != "" {
		s += " (for " + p.Act + ")"
	}
	return slackEscape.Replace(s)
}

func (n *Notifier) slackMessage(ev Event) slackMessage {
	r := &ev.Request
	id := slackEscape.Replace(r.ID)
	actor := "custos"
	if ev.Actor != nil {
		actor = slackWho(*ev.Actor)
	}
	groups := slackEscape.Replace(strings.Join(r.ApproverGroups, ", "))
	var headline string
	switch ev.Type {
	case EventRequested:
		headline = fmt.Sprintf("Approval %s requested by %s on %s: needs %d approval(s) from %s before %s",
			id, slackWho(r.Requester), slackEscape.Replace(r.Resource), r.Quorum, groups, r.ExpiresAt.UTC().Format(time.RFC3339))
	case EventApproved:
		headline = fmt.Sprintf("%s approved %s (%d of %d)", actor, id, len(r.Approvals), r.Quorum)
	case EventDecided:
		headline = fmt.Sprintf("Approval %s granted: %d of %d approvals, last by %s", id, len(r.Approvals), r.Quorum, actor)
	case EventDenied:
		headline = fmt.Sprintf("%s denied %s", actor, id)
	case EventExpired:
		headline = fmt.Sprintf("Approval %s expired: %s", id, slackEscape.Replace(r.Note))
	case EventWithdrawn:
		headline = fmt.Sprintf("Approval %s withdrawn: %s", id, slackEscape.Replace(r.Note))
	case EventConsumed:
		headline = fmt.Sprintf("The statement approved by %s ran", id)
	default:
		headline = fmt.Sprintf("Approval %s: %s", id, slackEscape.Replace(ev.Type))
	}
	summary := strings.ReplaceAll(truncate(r.Summary, maxWebhookSummary), "```", "` ` `")
	msg := slackMessage{
		Text: "custos: " + headline,
		Blocks: []slackBlock{
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: "*" + headline + "*"}},
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: "```" + slackEscape.Replace(summary) + "```"}},
			{Type: "context", Elements: []any{slackText{Type: "mrkdwn",
				Text: fmt.Sprintf("state: %s · resource: %s · requester: %s · approvers: %s",
					r.State, slackEscape.Replace(r.Resource), slackWho(r.Requester), groups)}}},
		},
	}
	if link := n.link(r.ID); link != "" {
		msg.Text += " <" + link + "|open>"
		msg.Blocks = append(msg.Blocks, slackBlock{Type: "actions", Elements: []any{slackButton{
			Type: "button", Text: slackText{Type: "plain_text", Text: "Open " + r.ID}, URL: link,
		}}})
	}
	return msg
}
