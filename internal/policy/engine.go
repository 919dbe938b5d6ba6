package policy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-dev/custos/policies"
)

// Defaults of Options.
const (
	DefaultTimeout       = 100 * time.Millisecond
	DefaultCacheEntries  = 10_000
	DefaultWatchInterval = 2 * time.Second
)

// ErrUndefined: the policy defines no decision for an input.
var ErrUndefined = errors.New(Query + " is undefined")

// Options configure an Engine.
type Options struct {
	// Dir is the policy directory; "" loads the embedded default policy
	// (package policies).
	Dir string
	// Logger receives reloads (Info), failed reloads and policy errors
	// (Error). nil discards.
	Logger *slog.Logger
	// Timeout bounds one evaluation (default 100ms).
	Timeout time.Duration
	// CacheEntries bounds the decision cache (default 10000); a negative
	// value turns the cache off. SQL and HTTP decisions are cached, keyed
	// by the principal, resource and request and by whichever of
	// input.session, input.principal.claims, input.principal.email and
	// input.http.headers the policy reads; a policy that reads the input
	// as a whole or calls a nondeterministic builtin is not cached. A
	// policy that decides on anything else outside the input that changes
	// without a reload (data pushed by SetData reloads) must run without
	// the cache.
	CacheEntries int
	// WatchInterval is how often Watch looks at Dir (default 2s).
	WatchInterval time.Duration
	// Registerer receives the engine's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// OnReload, when set, is told of every load of the policy, the first
	// one (in New) included, whether it succeeded or not, for the audit
	// record. It is called before Reload returns, with reloads held off:
	// it must not call Reload.
	OnReload func(ReloadEvent)
}

// ReloadEvent is one load of the policy, passed to Options.OnReload.
type ReloadEvent struct {
	// Source is the policy directory, or "embedded".
	Source string
	// Version is the version in use after the load: the new one, or the
	// one kept when the load failed ("" when none was loaded before).
	Version string
	// Previous is the version in use before the load ("" for the first).
	Previous string
	// Files is the number of policy and data files loaded (on success).
	Files int
	// Err is why the load failed; nil on success.
	Err error
}

// Engine decides requests with the current policy version.
type Engine struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	cur atomic.Pointer[version]

	reloadMu sync.Mutex
	// runtime are data documents set with SetData, loaded with the
	// policy's own files (reloadMu guards it).
	runtime map[string]source
	// failedHash is the hash of the sources that last failed to load, so
	// that Watch does not retry (and log) the same broken files every tick.
	failedHash string
}

// version is one loaded policy: immutable but for its cache.
type version struct {
	query rego.PreparedEvalQuery
	hash  string
	id    string
	cache *decisionCache // nil when caching is off
	reads inputReads     // what the cache key holds beyond its fixed parts
}

// New loads and prepares the policy. It fails when the policy does not load.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CacheEntries == 0 {
		opts.CacheEntries = DefaultCacheEntries
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = DefaultWatchInterval
	}
	e := &Engine{opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registerer)}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Version identifies the policy in use: the first 12 hex digits of the
// SHA-256 of its files' names and contents.
func (e *Engine) Version() string { return e.cur.Load().id }

func (e *Engine) source() (fs.FS, string) {
	if e.opts.Dir == "" {
		return policies.FS, "embedded"
	}
	return os.DirFS(e.opts.Dir), e.opts.Dir
}

// Reload loads the policy again and, when it compiles, swaps it in with an
// empty decision cache. On failure the previous version keeps serving, the
// failure is logged at Error and returned.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	fsys, from := e.source()
	prev := e.cur.Load()
	srcs, err := readSources(fsys)
	hash := ""
	if err == nil {
		srcs = e.withRuntime(srcs)
		hash = hashSources(srcs)
		err = e.install(ctx, srcs, hash)
	}
	if err != nil {
		e.failedHash = hash
		e.metrics.reloads.WithLabelValues("error").Inc()
		attrs := []any{slog.String("source", from), slog.Any("error", err)}
		if prev != nil {
			attrs = append(attrs, slog.String("policy_version", prev.id))
		}
		e.log.Error("policy load failed, previous policy kept", attrs...)
		e.onReload(ReloadEvent{Source: from, Version: versionID(prev), Previous: versionID(prev), Err: err})
		return err
	}
	e.failedHash = ""
	e.metrics.reloads.WithLabelValues("ok").Inc()
	attrs := []any{slog.String("source", from), slog.String("policy_version", e.cur.Load().id), slog.Int("files", len(srcs))}
	if prev != nil {
		attrs = append(attrs, slog.String("previous_policy_version", prev.id))
	}
	e.log.Info("policy loaded", attrs...)
	e.onReload(ReloadEvent{Source: from, Version: e.cur.Load().id, Previous: versionID(prev), Files: len(srcs)})
	return nil
}

// SetData puts doc at data path dir (slash separated, e.g.
// "custos/discovered") beside the policy's own files and reloads the
// policy with it; the policy version changes with the data. The document
// stays through later reloads until replaced. A document that conflicts
// with the policy's files fails the reload: the previous version (and
// data) keep serving and the error is returned.
func (e *Engine) SetData(ctx context.Context, dir string, doc any) error {
	dir = strings.Trim(dir, "/")
	if dir == "" || strings.Contains(dir, "..") {
		return fmt.Errorf("%w: data path %q", ErrInvalidPolicy, dir)
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%w: data at %s: %w", ErrInvalidPolicy, dir, err)
	}
	e.reloadMu.Lock()
	old, had := e.runtime[dir]
	if e.runtime == nil {
		e.runtime = map[string]source{}
	}
	e.runtime[dir] = source{path: dir + "/" + runtimeDataFile, data: raw}
	e.reloadMu.Unlock()
	if err := e.Reload(ctx); err != nil {
		e.reloadMu.Lock()
		if had {
			e.runtime[dir] = old
		} else {
			delete(e.runtime, dir)
		}
		e.reloadMu.Unlock()
		return err
	}
	return nil
}

// runtimeDataFile names SetData's documents among the policy's files.
const runtimeDataFile = "runtime-data.json"

// withRuntime appends the SetData documents to the files read, in path
// order so the version hash does not depend on map order.
func (e *Engine) withRuntime(srcs []source) []source {
	if len(e.runtime) == 0 {
		return srcs
	}
	dirs := make([]string, 0, len(e.runtime))
	for d := range e.runtime {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	out := append([]source(nil), srcs...)
	for _, d := range dirs {
		out = append(out, e.runtime[d])
	}
	return out
}

func (e *Engine) onReload(ev ReloadEvent) {
	if e.opts.OnReload != nil {
		e.opts.OnReload(ev)
	}
}

// versionID is v's id, "" for none.
func versionID(v *version) string {
	if v == nil {
		return ""
	}
	return v.id
}

func (e *Engine) install(ctx context.Context, srcs []source, hash string) error {
	pq, reads, err := prepare(ctx, srcs)
	if err != nil {
		return err
	}
	v := &version{query: pq, hash: hash, id: hash[:12], reads: reads}
	switch {
	case e.opts.CacheEntries <= 0:
	case reads.uncacheable != "":
		e.log.Info("policy decisions are not cached: "+reads.uncacheable, slog.String("policy_version", v.id))
	default:
		v.cache = newDecisionCache(e.opts.CacheEntries)
		if k := reads.String(); k != "" {
			e.log.Info("policy decisions are cached by what the policy reads", slog.String("policy_version", v.id), slog.String("also_keyed_by", k))
		}
	}
	e.cur.Store(v)
	return nil
}

// Watch reloads the policy whenever the files of Dir change, until ctx ends.
// It looks every WatchInterval and compares contents, not times, so an
// editor's or a ConfigMap's atomic replace is seen. Sources that failed to
// load are not tried again until they change. Without Dir it returns at once.
func (e *Engine) Watch(ctx context.Context) {
	if e.opts.Dir == "" {
		return
	}
	t := time.NewTicker(e.opts.WatchInterval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		srcs, err := readSources(os.DirFS(e.opts.Dir))
		if err != nil {
			// A directory being replaced can be missing for a moment: say so
			// once, keep the policy, look again.
			if msg := err.Error(); msg != lastErr {
				e.log.Warn("policy directory unreadable", slog.String("dir", e.opts.Dir), slog.Any("error", err))
				lastErr = msg
			}
			continue
		}
		lastErr = ""
		e.reloadMu.Lock()
		hash := hashSources(e.withRuntime(srcs))
		stale := hash != e.cur.Load().hash && hash != e.failedHash
		e.reloadMu.Unlock()
		if stale {
			_ = e.Reload(ctx) // logged by Reload
		}
	}
}

// Decide evaluates data.custos.decision for in. It never fails open: an
// undefined decision, an evaluation error, a timeout (Options.Timeout) or a
// decision of the wrong shape is a denial with a reason starting with
// "policy error:", logged at Error. Decisions of kinds "sql" and "http" are cached. The
// returned decision is the caller's own.
func (e *Engine) Decide(ctx context.Context, in *Input) *Decision {
	id := NewDecisionID()
	v := e.cur.Load()
	if in == nil {
		return e.fail(v, id, "input", errors.New("no input"))
	}
	input := *in
	if input.Version == 0 {
		input.Version = InputVersion
	}
	cache := v.cache
	if input.Kind != KindSQL && input.Kind != KindHTTP {
		cache = nil
	}
	var key cacheKey
	if cache != nil {
		var err error
		if key, err = makeCacheKey(&input, &v.reads); err != nil {
			return e.fail(v, id, "input", err)
		}
		if d, ok := cache.get(key); ok {
			d.ID, d.Cached = id, true
			e.metrics.decisions.WithLabelValues(string(d.Outcome()), "true").Inc()
			return d
		}
	}
	start := time.Now()
	d, kind, err := e.eval(ctx, v, &input)
	e.metrics.evalSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return e.fail(v, id, kind, err)
	}
	d.PolicyVersion = v.id
	if cache != nil {
		cache.put(key, d.clone())
	}
	d.ID = id
	e.metrics.decisions.WithLabelValues(string(d.Outcome()), "false").Inc()
	return d
}

// eval runs the prepared query. kind classifies an error for the metrics.
func (e *Engine) eval(ctx context.Context, v *version, in *Input) (*Decision, string, error) {
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, "input", fmt.Errorf("input: %w", err)
	}
	value, err := ast.ValueFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, "input", fmt.Errorf("input: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	rs, err := v.query.Eval(ctx, rego.EvalParsedInput(value))
	if err != nil {
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, "timeout", fmt.Errorf("evaluation did not finish within %s", e.opts.Timeout)
			}
			return nil, "canceled", fmt.Errorf("evaluation canceled: %w", ctx.Err())
		}
		return nil, "eval", fmt.Errorf("evaluation failed: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, "undefined", ErrUndefined
	}
	out, err := json.Marshal(rs[0].Expressions[0].Value)
	if err != nil {
		return nil, "malformed", fmt.Errorf("%w: %w", ErrMalformedDecision, err)
	}
	d, err := parseDecision(out)
	if err != nil {
		return nil, "malformed", err
	}
	if !d.Allow && len(d.Reasons) == 0 {
		d.Reasons = []string{"denied by policy"}
	}
	return d, "", nil
}

// fail is the denial for a decision that could not be made.
func (e *Engine) fail(v *version, id, kind string, err error) *Decision {
	e.metrics.errors.WithLabelValues(kind).Inc()
	e.metrics.decisions.WithLabelValues(string(OutcomeDeny), "false").Inc()
	e.log.Error("policy decision failed, denied", slog.String("decision_id", id),
		slog.String("policy_version", v.id), slog.String("error_kind", kind), slog.Any("error", err))
	return &Decision{
		ID:            id,
		Allow:         false,
		Reasons:       []string{"policy error: " + err.Error()},
		PolicyVersion: v.id,
	}
}

// NewDecisionID is "dec_" and 16 random hex digits.
func NewDecisionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return "dec_" + hex.EncodeToString(b[:])
}
