package approval

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/pgcluster"
)

// The PostgreSQL tests share one throwaway cluster, started on first use;
// each test gets a database of its own.
var shared struct {
	once sync.Once
	base string
	cl   *pgcluster.Cluster
	err  error
	n    atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cl != nil {
		_ = shared.cl.Stop()
	}
	if shared.base != "" {
		_ = os.RemoveAll(shared.base)
	}
	os.Exit(code)
}

func cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	shared.once.Do(func() {
		shared.base, shared.err = os.MkdirTemp("", "custos-approval-")
		if shared.err != nil {
			return
		}
		// The server may run as the postgres user (when tests run as root).
		if shared.err = os.Chmod(shared.base, 0o711); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.cl, shared.err = pgcluster.Start(ctx, pgcluster.Options{
			Dir: filepath.Join(shared.base, "data"),
			Settings: map[string]string{
				"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
			},
		})
	})
	if shared.err != nil {
		t.Fatalf("start PostgreSQL: %v", shared.err)
	}
	return shared.cl
}

// pgDSN returns the DSN of a fresh database on the shared cluster.
func pgDSN(t testing.TB) string {
	t.Helper()
	cl := cluster(t)
	name := fmt.Sprintf("approval_%d", shared.n.Add(1))
	if err := cl.CreateDatabase(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	return cl.DSN(name)
}

// backend opens stores of one kind; open may be called several times per
// test and returns stores on the same database (another process, or the
// same one after a restart).
type backend struct {
	name string
	// location makes a fresh database and returns how to reach it.
	location func(t testing.TB) string
	open     func(t testing.TB, loc string) Store
	// tryOpen opens a store and returns the error, if any.
	tryOpen func(loc string) (Store, error)
	// table names a table of the store in raw SQL.
	table func(name string) string
	// exec runs raw SQL on the database behind the store, bypassing it;
	// args use $1, $2... placeholders on both.
	exec func(t testing.TB, loc, sql string, args ...any) error
	// queryInt runs a raw query returning one integer.
	queryInt func(t testing.TB, loc, sql string, args ...any) int64
}

var backends = []backend{
	{
		name:     "sqlite",
		location: func(t testing.TB) string { return filepath.Join(t.TempDir(), "approvals.db") },
		open: func(t testing.TB, loc string) Store {
			t.Helper()
			st, err := OpenSQLite(loc)
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		tryOpen: OpenSQLite,
		table:   func(name string) string { return name },
		exec: func(t testing.TB, loc, q string, args ...any) error {
			t.Helper()
			db := rawSQLite(t, loc)
			_, err := db.ExecContext(context.Background(), q, args...)
			return err
		},
		queryInt: func(t testing.TB, loc, q string, args ...any) int64 {
			t.Helper()
			db := rawSQLite(t, loc)
			var n int64
			if err := db.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
	},
	{
		name:     "postgres",
		location: pgDSN,
		open: func(t testing.TB, loc string) Store {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := OpenPostgres(ctx, loc)
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		tryOpen: func(loc string) (Store, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return OpenPostgres(ctx, loc)
		},
		table: func(name string) string { return PostgresSchema + "." + name },
		exec: func(t testing.TB, loc, q string, args ...any) error {
			t.Helper()
			conn := rawPostgres(t, loc)
			_, err := conn.Exec(context.Background(), q, args...)
			return err
		},
		queryInt: func(t testing.TB, loc, q string, args ...any) int64 {
			t.Helper()
			conn := rawPostgres(t, loc)
			var n int64
			if err := conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
	},
}

// rawSQLite opens the file behind a SQLite store with database/sql.
func rawSQLite(t testing.TB, loc string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", loc+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// rawPostgres connects to the database behind a PostgreSQL store.
func rawPostgres(t testing.TB, loc string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), loc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// forEachStore runs f as a parallel subtest per backend.
func forEachStore(t *testing.T, f func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

// openStore opens a store on a fresh database, closed after the test.
func openStore(t testing.TB, b backend) (Store, string) {
	t.Helper()
	loc := b.location(t)
	st := b.open(t, loc)
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return st, loc
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recorder keeps the events a Service reports.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// newService starts a Service on st, closed after the test.
func newService(t testing.TB, st Store, opts Options) *Service {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := NewService(context.Background(), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// People of the tests. The agent acts for alice; bob and carol are dbas;
// root is an admin who is a dba too.
var (
	agent = Principal{Sub: "agent-7", Iss: "https://idp.example", Groups: []string{"agents"}, Act: "alice@example.com"}
	alice = Principal{Sub: "alice@example.com", Iss: "https://idp.example", Groups: []string{"dba", "engineers"}}
	bob   = Principal{Sub: "bob@example.com", Iss: "https://idp.example", Groups: []string{"dba"}}
	carol = Principal{Sub: "carol@example.com", Iss: "https://idp.example", Groups: []string{"security", "dba"}}
	dave  = Principal{Sub: "dave@example.com", Iss: "https://idp.example", Groups: []string{"engineers"}}
	root  = Principal{Sub: "root", Iss: "https://idp.example", Groups: []string{"admin", "dba"}}
)

const testSQL = "UPDATE cards SET holder = $1 WHERE id = $2"

var testParams = [][]byte{[]byte("Jane Doe"), []byte("42")}

// newReq is a request of the agent for approval by a dba.
func newReq(mods ...func(*NewRequest)) NewRequest {
	nr := NewRequest{
		Hash:           PinHash(agent, "payments-db", KindSQL, testSQL, testParams),
		Requester:      agent,
		Resource:       "payments-db",
		Kind:           KindSQL,
		Summary:        "UPDATE cards SET holder = $1 WHERE id = $2",
		Detail:         testSQL,
		Flags:          []string{"write", "cde"},
		Reasons:        []string{"writes to cardholder data need approval from dba"},
		DecisionID:     "dec_1",
		SessionID:      "ses_1",
		ApproverGroups: []string{"dba"},
		Quorum:         1,
		TTL:            time.Hour,
	}
	for _, m := range mods {
		m(&nr)
	}
	return nr
}

// testLogger shows warnings and errors in the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
