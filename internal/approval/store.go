package approval

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Store keeps requests. Implementations are safe for concurrent use, by
// several Services and by several processes sharing the same database.
// Service reads a request, applies a rule and writes it back with Update;
// the compare-and-swap on Version makes every transition atomic however
// many replicas race.
type Store interface {
	// Create stores a new request; r.Version is 1. An existing r.ID is
	// ErrConflict.
	Create(ctx context.Context, r *Request) error
	// Get returns request id, or ErrNotFound.
	Get(ctx context.Context, id string) (*Request, error)
	// List returns the requests f selects, newest first: by CreatedAt,
	// then by ID, both descending (the order Filter.After refers to).
	List(ctx context.Context, f Filter) ([]Request, error)
	// Due returns up to limit live requests (pending or approved) whose
	// ExpiresAt is at or before before, soonest first.
	Due(ctx context.Context, before time.Time, limit int) ([]Request, error)
	// Update replaces request r.ID with r if the stored version is still
	// r.Version, and then increments r.Version. Otherwise it returns
	// ErrConflict (or ErrNotFound) and stores nothing.
	Update(ctx context.Context, r *Request) error
	// Changes returns the ids of requests created or updated by any
	// writer of the store: this process and, where the store can see
	// them, other processes too. An id may come more than once. An empty
	// id means changes may have been missed (a lost connection, a slow
	// reader): re-read every request of interest. The channel is closed
	// when ctx is done or the store is closed.
	Changes(ctx context.Context) <-chan string
	// Close releases the store. Changes channels are closed.
	Close() error
}

// feedBuffer is how many ids a Changes subscriber may fall behind before
// it is told to re-read everything.
const feedBuffer = 256

// feed fans ids out to Changes subscribers without ever blocking a writer.
type feed struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	ch   chan string
	lost bool // an id was dropped: send "" before anything else
}

func (f *feed) subscribe(ctx context.Context) <-chan string {
	s := &subscriber{ch: make(chan string, feedBuffer)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || ctx.Err() != nil {
		close(s.ch)
		return s.ch
	}
	if f.subs == nil {
		f.subs = make(map[*subscriber]struct{})
	}
	f.subs[s] = struct{}{}
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[s]; ok {
			delete(f.subs, s)
			close(s.ch)
		}
	})
	return s.ch
}

func (f *feed) publish(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		if s.lost {
			select {
			case s.ch <- "":
				s.lost = false
			default:
				continue
			}
		}
		select {
		case s.ch <- id:
		default:
			s.lost = true
		}
	}
}

func (f *feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for s := range f.subs {
		close(s.ch)
	}
	f.subs = nil
}

//go:embed migrations
var migrationFiles embed.FS

// migration is one schema change: migrations/<store>/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns dir's migrations in version order. Versions start at
// 1 and have no gaps: a store records each one it applies.
func migrations(dir string) ([]migration, error) {
	dir = path.Join("migrations", dir)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("approval: read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("approval: migration %s: name must start with its version", e.Name())
		}
		b, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("approval: read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("approval: migrations of %s: expected version %d, found %s", dir, i+1, m.name)
		}
	}
	return ms, nil
}

// pendingMigrations returns the migrations not yet applied, given the highest
// applied version, and refuses a schema newer than this build knows.
func pendingMigrations(all []migration, applied int) ([]migration, error) {
	if applied > len(all) {
		return nil, fmt.Errorf("%w: it is at version %d, this build knows up to %d", ErrSchemaTooNew, applied, len(all))
	}
	return all[applied:], nil
}

// listQuery is the query of List for f on table: the SQL and its
// arguments. param(n) is the placeholder of the nth argument (from 1); at
// converts a time to what the store's time columns hold.
func listQuery(table string, f Filter, param func(n int) string, at func(time.Time) any) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return param(len(args))
	}
	if f.State != "" {
		where = append(where, "state = "+arg(string(f.State)))
	}
	if f.Holder != "" {
		where = append(where, "holder = "+arg(f.Holder))
	}
	if !f.After.IsZero() {
		// (created_at, id) < (after), written so that the first condition
		// bounds an index range on created_at.
		where = append(where, fmt.Sprintf("created_at <= %s AND (created_at < %s OR id < %s)",
			arg(at(f.After.CreatedAt)), arg(at(f.After.CreatedAt)), arg(f.After.ID)))
	}
	q := "SELECT id, version, body FROM " + table
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT " + arg(f.limit())
	return q, args
}

// decodeRequest reads a stored body; the version column is authoritative.
// A body that is not a request of that id in a known state is ErrCorrupt:
// a store never hands the state machine something it cannot reason about.
func decodeRequest(id string, version int64, body []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, id, err)
	}
	switch {
	case r.ID != id:
		return nil, fmt.Errorf("%w: %s: its body names request %q", ErrCorrupt, id, r.ID)
	case !r.State.Valid():
		return nil, fmt.Errorf("%w: %s: unknown state %q", ErrCorrupt, id, r.State)
	case r.Hash == "":
		return nil, fmt.Errorf("%w: %s: no hash", ErrCorrupt, id)
	}
	r.Version = version
	return &r, nil
}

// storeErr explains err, the failure of op on request id (or of a query
// when id is ""); after Close every failure is ErrStoreClosed.
func storeErr(closed bool, op, id string, err error) error {
	if closed {
		err = ErrStoreClosed
	}
	if id == "" {
		return fmt.Errorf("approval: %s: %w", op, err)
	}
	return fmt.Errorf("approval: %s %s: %w", op, id, err)
}
