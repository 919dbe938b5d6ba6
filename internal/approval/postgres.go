package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresSchema holds the PostgreSQL store's tables.
const PostgresSchema = "custos_approval"

// PostgresChannel is the LISTEN/NOTIFY channel: a trigger notifies it with
// the request id on every committed insert or update.
const PostgresChannel = "custos_approval"

// migrationLockKey serializes schema migrations of replicas starting
// together (pg_advisory_xact_lock): the bytes of "custosap".
const migrationLockKey int64 = 0x637573746f736170

// Reconnection backoff of the LISTEN connection.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// pgStore keeps requests in PostgreSQL, for several custos replicas.
type pgStore struct {
	pool *pgxpool.Pool
	feed feed

	listenOnce sync.Once
	closed     atomic.Bool
	ctx        context.Context // ends when the store is closed
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// OpenPostgres connects to the database dsn names (a pgx connection string
// or URL, pool settings included) and brings the custos_approval schema
// up to date. The role needs CREATE on the database the first time, and
// on later schema versions.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("approval: postgres store: %w", err)
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "custos-approval"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("approval: postgres store: %w", err)
	}
	s := &pgStore{pool: pool}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.migrate(ctx); err != nil {
		s.cancel()
		pool.Close()
		return nil, fmt.Errorf("approval: postgres store: %w", err)
	}
	return s, nil
}

func (s *pgStore) migrate(ctx context.Context) error {
	all, err := migrations("postgres")
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+PostgresSchema+`;
			CREATE TABLE IF NOT EXISTS `+PostgresSchema+`.schema_migrations (
				version    integer     PRIMARY KEY,
				name       text        NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now()
			)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var applied int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+PostgresSchema+`.schema_migrations`).Scan(&applied); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		todo, err := pendingMigrations(all, applied)
		if err != nil {
			return err
		}
		for _, m := range todo {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+PostgresSchema+`.schema_migrations (version, name) VALUES ($1, $2)`,
				m.version, m.name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// pgRetries is how many times a store operation is tried again when its
// connection broke (a restarted server, a killed backend): the pool then
// hands out a fresh connection.
const pgRetries = 2

// retry runs op, again when it failed on a broken connection and running
// it again is safe: always for reads; for writes when nothing reached the
// server (pgconn.SafeToRetry) or when the backend was terminating and so
// ran nothing. A write that may have committed is not repeated: its caller
// re-reads and sees. retried tells whether op ran more than once.
func (s *pgStore) retry(ctx context.Context, read bool, op func() error) (retried bool, err error) {
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil || attempt >= pgRetries || ctx.Err() != nil || s.closed.Load() {
			return attempt > 0, err
		}
		if !pgconn.SafeToRetry(err) && !terminated(err) && (!read || !brokenConn(err)) {
			return attempt > 0, err
		}
	}
}

// terminated reports whether the server answered that the backend is
// going away (terminated, crash or shutdown): it ran nothing more.
func terminated(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03")
}

// brokenConn reports whether err is a failure of the connection rather
// than an answer of the server or the end of the caller's context.
func brokenConn(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return terminated(err)
	}
	return !errors.Is(err, pgx.ErrNoRows) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// fail explains err, the failure of op on request id.
func (s *pgStore) fail(op, id string, err error) error {
	return storeErr(s.closed.Load(), op, id, err)
}

func (s *pgStore) Create(ctx context.Context, r *Request) error {
	if s.closed.Load() {
		return s.fail("create request", r.ID, ErrStoreClosed)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("approval: encode request: %w", err)
	}
	retried, err := s.retry(ctx, false, func() error {
		_, err := s.pool.Exec(ctx, `INSERT INTO `+PostgresSchema+`.requests
			(id, state, hash, requester_iss, requester_sub, resource, kind, holder,
			 created_at, expires_at, updated_at, version, body)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			r.ID, string(r.State), r.Hash, r.Requester.Iss, r.Requester.Sub, r.Resource, r.Kind, r.Holder,
			r.CreatedAt, r.ExpiresAt, r.UpdatedAt, r.Version, string(body))
		return err
	})
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			// A retried insert may find its own first attempt.
			if got, gerr := s.Get(ctx, r.ID); retried && gerr == nil && got.Hash == r.Hash &&
				got.CreatedAt.Equal(r.CreatedAt) && got.Version == r.Version {
				s.feed.publish(r.ID)
				return nil
			}
			return fmt.Errorf("%w: request %s exists", ErrConflict, r.ID)
		}
		return s.fail("create request", r.ID, err)
	}
	s.feed.publish(r.ID)
	return nil
}

func (s *pgStore) Update(ctx context.Context, r *Request) error {
	if s.closed.Load() {
		return s.fail("update request", r.ID, ErrStoreClosed)
	}
	next := *r
	next.Version = r.Version + 1
	body, err := json.Marshal(&next)
	if err != nil {
		return fmt.Errorf("approval: encode request: %w", err)
	}
	var tag pgconn.CommandTag
	_, err = s.retry(ctx, false, func() error {
		var err error
		tag, err = s.pool.Exec(ctx, `UPDATE `+PostgresSchema+`.requests SET
			state = $1, holder = $2, expires_at = $3, updated_at = $4, body = $5, version = version + 1
			WHERE id = $6 AND version = $7`,
			string(r.State), r.Holder, r.ExpiresAt, r.UpdatedAt, string(body), r.ID, r.Version)
		return err
	})
	if err != nil {
		return s.fail("update request", r.ID, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.Get(ctx, r.ID); err != nil {
			return err
		}
		return fmt.Errorf("%w: request %s is no longer at version %d", ErrConflict, r.ID, r.Version)
	}
	r.Version = next.Version
	s.feed.publish(r.ID)
	return nil
}

func (s *pgStore) Get(ctx context.Context, id string) (*Request, error) {
	if s.closed.Load() {
		return nil, s.fail("get request", id, ErrStoreClosed)
	}
	var version int64
	var body []byte
	_, err := s.retry(ctx, true, func() error {
		return s.pool.QueryRow(ctx, `SELECT version, body FROM `+PostgresSchema+`.requests WHERE id = $1`, id).Scan(&version, &body)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, s.fail("get request", id, err)
	}
	return decodeRequest(id, version, body)
}

func (s *pgStore) List(ctx context.Context, f Filter) ([]Request, error) {
	q, args := listQuery(PostgresSchema+".requests", f,
		func(n int) string { return "$" + strconv.Itoa(n) },
		func(t time.Time) any { return t })
	return s.query(ctx, q, args...)
}

func (s *pgStore) Due(ctx context.Context, before time.Time, limit int) ([]Request, error) {
	return s.query(ctx, `SELECT id, version, body FROM `+PostgresSchema+`.requests
		WHERE state IN ('pending', 'approved') AND expires_at <= $1
		ORDER BY expires_at LIMIT $2`, before, limit)
}

func (s *pgStore) query(ctx context.Context, q string, args ...any) ([]Request, error) {
	if s.closed.Load() {
		return nil, s.fail("list requests", "", ErrStoreClosed)
	}
	var out []Request
	_, err := s.retry(ctx, true, func() error {
		out = nil
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var version int64
			var body []byte
			if err := rows.Scan(&id, &version, &body); err != nil {
				return err
			}
			r, err := decodeRequest(id, version, body)
			if err != nil {
				return err
			}
			out = append(out, *r)
		}
		return rows.Err()
	})
	if errors.Is(err, ErrCorrupt) {
		return nil, err
	}
	if err != nil {
		return nil, s.fail("list requests", "", err)
	}
	return out, nil
}

func (s *pgStore) Changes(ctx context.Context) <-chan string {
	s.listenOnce.Do(func() {
		s.wg.Add(1)
		go s.listen()
	})
	return s.feed.subscribe(ctx)
}

// listen holds one connection in LISTEN on PostgresChannel and publishes
// each notification's id. After every (re)connection it publishes "":
// whatever was committed while it was not listening is unknown.
func (s *pgStore) listen() {
	defer s.wg.Done()
	backoff := listenBackoffMin
	for s.ctx.Err() == nil {
		if s.listenConn() {
			backoff = listenBackoffMin
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listenConn runs one LISTEN connection until it fails or the store
// closes, and reports whether it got as far as listening.
func (s *pgStore) listenConn() (listened bool) {
	conn, err := pgx.ConnectConfig(s.ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return false
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()
	if _, err := conn.Exec(s.ctx, `LISTEN `+PostgresChannel); err != nil {
		return false
	}
	s.feed.publish("")
	for {
		n, err := conn.WaitForNotification(s.ctx)
		if err != nil {
			return true
		}
		s.feed.publish(n.Payload)
	}
}

// Close stops the change feed and closes the pool; later calls return
// ErrStoreClosed from every method but Close.
func (s *pgStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	s.feed.close()
	s.pool.Close()
	return nil
}
