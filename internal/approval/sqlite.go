package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLitePollInterval is how often a SQLite store looks for changes made by
// other processes on the same file. Changes made through the store itself
// are seen at once.
const SQLitePollInterval = 200 * time.Millisecond

// sqliteBusyTimeout is how long a statement waits for another writer's
// lock before it fails.
const sqliteBusyTimeout = 10 * time.Second

// sqliteStore is the embedded store: one SQLite file in WAL mode, shared
// by every Service of the process and, through polling, by other processes.
type sqliteStore struct {
	db   *sql.DB
	feed feed

	pollOnce sync.Once
	closed   atomic.Bool
	ctx      context.Context // ends when the store is closed
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// OpenSQLite opens (creating it when missing, mode 0600) the SQLite
// database at path and brings its schema up to date. The file is in WAL
// mode with full synchronous commits: a transition that returned is on
// disk. Several processes may open the same file; each sees the others'
// changes within SQLitePollInterval.
func OpenSQLite(path string) (Store, error) {
	if path == "" || strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("approval: sqlite store needs a plain file path, not %q", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("approval: sqlite store: %w", err)
	}
	// Requests hold statement text: keep the file private to custos.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("approval: sqlite store: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("approval: sqlite store: %w", err)
	}
	dsn := path + "?" + strings.Join([]string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_txlock=immediate",
	}, "&")
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("approval: open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	s := &sqliteStore{db: db}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.migrate(s.ctx); err != nil {
		s.cancel()
		_ = db.Close()
		return nil, fmt.Errorf("approval: sqlite %s: %w", path, err)
	}
	return s, nil
}

func (s *sqliteStore) migrate(ctx context.Context) error {
	all, err := migrations("sqlite")
	if err != nil {
		return err
	}
	// BEGIN IMMEDIATE (the _txlock above): one process migrates at a time.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at TEXT    NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var applied int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&applied); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	todo, err := pendingMigrations(all, applied)
	if err != nil {
		return err
	}
	for _, m := range todo {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.version, m.name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("record migration %s: %w", m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }

// nextSeq is the seq of the write it is part of; the write holds SQLite's
// only write lock, so no other write can take the same one.
const nextSeq = `(SELECT coalesce(max(seq), 0) + 1 FROM requests)`

// fail explains err, the failure of op on request id.
func (s *sqliteStore) fail(op, id string, err error) error {
	return storeErr(s.closed.Load(), op, id, err)
}

func (s *sqliteStore) Create(ctx context.Context, r *Request) error {
	if s.closed.Load() {
		return s.fail("create request", r.ID, ErrStoreClosed)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("approval: encode request: %w", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO requests
		(id, state, hash, requester_iss, requester_sub, resource, kind, holder,
		 created_at, expires_at, updated_at, version, seq, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, `+nextSeq+`, ?)`,
		r.ID, string(r.State), r.Hash, r.Requester.Iss, r.Requester.Sub, r.Resource, r.Kind, r.Holder,
		micros(r.CreatedAt), micros(r.ExpiresAt), micros(r.UpdatedAt), r.Version, string(body))
	if err != nil {
		if sqliteCode(err)&0xff == sqlite3.SQLITE_CONSTRAINT && strings.Contains(err.Error(), "requests.id") {
			return fmt.Errorf("%w: request %s exists", ErrConflict, r.ID)
		}
		return s.fail("create request", r.ID, err)
	}
	s.feed.publish(r.ID)
	return nil
}

func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func (s *sqliteStore) Update(ctx context.Context, r *Request) error {
	if s.closed.Load() {
		return s.fail("update request", r.ID, ErrStoreClosed)
	}
	next := *r
	next.Version = r.Version + 1
	body, err := json.Marshal(&next)
	if err != nil {
		return fmt.Errorf("approval: encode request: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE requests SET
		state = ?, holder = ?, expires_at = ?, updated_at = ?, body = ?,
		version = version + 1, seq = `+nextSeq+`
		WHERE id = ? AND version = ?`,
		string(r.State), r.Holder, micros(r.ExpiresAt), micros(r.UpdatedAt), string(body),
		r.ID, r.Version)
	if err != nil {
		return s.fail("update request", r.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail("update request", r.ID, err)
	}
	if n == 0 {
		if _, err := s.Get(ctx, r.ID); err != nil {
			return err
		}
		return fmt.Errorf("%w: request %s is no longer at version %d", ErrConflict, r.ID, r.Version)
	}
	r.Version = next.Version
	s.feed.publish(r.ID)
	return nil
}

func (s *sqliteStore) Get(ctx context.Context, id string) (*Request, error) {
	if s.closed.Load() {
		return nil, s.fail("get request", id, ErrStoreClosed)
	}
	var version int64
	var body string
	err := s.db.QueryRowContext(ctx, `SELECT version, body FROM requests WHERE id = ?`, id).Scan(&version, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, s.fail("get request", id, err)
	}
	return decodeRequest(id, version, []byte(body))
}

func (s *sqliteStore) List(ctx context.Context, f Filter) ([]Request, error) {
	q, args := listQuery("requests", f,
		func(int) string { return "?" },
		func(t time.Time) any { return micros(t) })
	return s.query(ctx, q, args...)
}

func (s *sqliteStore) Due(ctx context.Context, before time.Time, limit int) ([]Request, error) {
	return s.query(ctx, `SELECT id, version, body FROM requests
		WHERE state IN ('pending', 'approved') AND expires_at <= ?
		ORDER BY expires_at LIMIT ?`, micros(before), limit)
}

func (s *sqliteStore) query(ctx context.Context, q string, args ...any) ([]Request, error) {
	if s.closed.Load() {
		return nil, s.fail("list requests", "", ErrStoreClosed)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list requests", "", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Request
	for rows.Next() {
		var id, body string
		var version int64
		if err := rows.Scan(&id, &version, &body); err != nil {
			return nil, s.fail("list requests", "", err)
		}
		r, err := decodeRequest(id, version, []byte(body))
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list requests", "", err)
	}
	return out, nil
}

func (s *sqliteStore) Changes(ctx context.Context) <-chan string {
	s.pollOnce.Do(func() {
		s.wg.Add(1)
		go s.poll()
	})
	return s.feed.subscribe(ctx)
}

// poll publishes the ids of rows whose seq grew: writes by other processes
// on the same file (and this store's own, a second time). Until it knows
// where the file stands, and after reads failed, it publishes "": what
// changed meanwhile is unknown.
func (s *sqliteStore) poll() {
	defer s.wg.Done()
	var last int64
	known := false
	t := time.NewTicker(SQLitePollInterval)
	defer t.Stop()
	for {
		if !known {
			if err := s.db.QueryRowContext(s.ctx, `SELECT coalesce(max(seq), 0) FROM requests`).Scan(&last); err == nil {
				known = true
				s.feed.publish("")
			}
		} else {
			ids, seq, err := s.changedSince(last)
			if err != nil {
				known = false
			} else {
				last = seq
				for _, id := range ids {
					s.feed.publish(id)
				}
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sqliteStore) changedSince(last int64) (ids []string, seq int64, err error) {
	rows, err := s.db.QueryContext(s.ctx, `SELECT id, seq FROM requests WHERE seq > ? ORDER BY seq LIMIT 1000`, last)
	if err != nil {
		return nil, last, err
	}
	defer func() { _ = rows.Close() }()
	seq = last
	for rows.Next() {
		var id string
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, last, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, last, err
	}
	return ids, seq, nil
}

// Close stops the change feed and closes the database; later calls return
// ErrStoreClosed from every method but Close.
func (s *sqliteStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	s.feed.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("approval: close sqlite store: %w", err)
	}
	return nil
}
