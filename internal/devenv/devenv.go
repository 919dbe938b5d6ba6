// Package devenv prepares what `custos dev` runs on: a throwaway local
// PostgreSQL cluster in the data dir, seeded with a demo cardholder-data
// database, and the gateway-held role custos logs in with. A second run on
// the same data dir reuses all of it.
package devenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/pgcluster"
)

// duplicateDatabase is SQLSTATE 42P04: a second run finds the database.
const duplicateDatabase = "42P04"

// Names of the demo database and the gateway's upstream roles.
const (
	Database     = "payments"
	ResourceName = "payments-db"
	// GatewayRole is custos' own login (result column origins, discovery).
	GatewayRole = "custos_gateway"
	// AgentRole is the agents group's login: SELECT only, a NOINHERIT
	// member of AgentWriteRole, which custos alone takes for approved
	// statements.
	AgentRole      = "custos_agent_ro"
	AgentWriteRole = "custos_agent_write"
	// DBARole is the dba group's login: DML, and CREATE for approved DDL.
	DBARole = "custos_dba"
)

// Groups the demo's logins serve, in the order custos tries them: agents
// first, as the default policy treats a principal in both as an agent.
const (
	AgentsGroup = "agents"
	DBAGroup    = "dba"
)

// Options configure Prepare.
type Options struct {
	// DataDir is custos' data dir; the cluster lives in DataDir/postgres.
	DataDir string
	// Port for the cluster; 0 picks a free one (reused on restart when free).
	Port   int
	Logger *slog.Logger
}

// Env is a running demo database.
type Env struct {
	Cluster *pgcluster.Cluster
	// Resource is the upstream configuration custos uses for the demo.
	Resource config.Resource
	// CAFile is the cluster's certificate, which custos verifies.
	CAFile string
}

// Prepare starts (initialising on first use) the demo cluster and seeds it.
func Prepare(ctx context.Context, opts Options) (*Env, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cl, err := pgcluster.Start(ctx, pgcluster.Options{
		Dir:    filepath.Join(opts.DataDir, "postgres"),
		Port:   opts.Port,
		TLS:    true,
		Logger: opts.Logger.With("component", "postgres"),
	})
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	env, err := Seed(ctx, cl, opts.DataDir)
	if err != nil {
		_ = cl.Stop()
		return nil, err
	}
	return env, nil
}

// Seed creates (or repairs) the gateway's roles, the demo database and its
// tables in a running cluster, keeping the roles' passwords in dataDir.
func Seed(ctx context.Context, cl *pgcluster.Cluster, dataDir string) (*Env, error) {
	type login struct {
		role, file, attrs string
		password          []byte
		fresh             bool
	}
	logins := []*login{
		{role: GatewayRole, file: "upstream-password", attrs: "LOGIN"},
		{role: AgentRole, file: "upstream-password-agent", attrs: "LOGIN NOINHERIT"},
		{role: DBARole, file: "upstream-password-dba", attrs: "LOGIN"},
	}
	for _, l := range logins {
		var err error
		l.password, l.fresh, err = readOrMakePassword(filepath.Join(dataDir, l.file))
		if err != nil {
			return nil, fmt.Errorf("devenv: %w", err)
		}
	}
	// Roles and database first (idempotent), then the password files, so
	// a crash in between is repaired by the next run.
	roles := fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN
    CREATE ROLE %[1]s NOLOGIN;
  END IF;
END $$;
`, AgentWriteRole)
	for _, l := range logins {
		roles += fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN
    CREATE ROLE %[1]s %[2]s;
  END IF;
END $$;
ALTER ROLE %[1]s %[2]s PASSWORD '%[3]s';
`, l.role, l.attrs, l.password)
	}
	roles += "GRANT " + AgentWriteRole + " TO " + AgentRole + ";\n"
	if err := cl.Exec(ctx, "postgres", roles); err != nil {
		return nil, fmt.Errorf("devenv: gateway roles: %w", err)
	}
	if err := cl.CreateDatabase(ctx, Database); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != duplicateDatabase {
			return nil, fmt.Errorf("devenv: %w", err)
		}
	}
	if err := cl.Exec(ctx, Database, seedSQL); err != nil {
		return nil, fmt.Errorf("devenv: seed: %w", err)
	}
	for _, l := range logins {
		if l.fresh {
			if err := os.WriteFile(filepath.Join(dataDir, l.file), l.password, 0o600); err != nil {
				return nil, fmt.Errorf("devenv: %w", err)
			}
		}
	}
	caFile := filepath.Join(dataDir, "postgres-ca.pem")
	if err := os.WriteFile(caFile, cl.CACertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	return &Env{
		Cluster: cl,
		CAFile:  caFile,
		Resource: config.Resource{
			Name:     ResourceName,
			Type:     "postgres",
			Address:  cl.Addr(),
			Database: Database,
			User:     GatewayRole,
			Password: config.Secret{File: filepath.Join(dataDir, logins[0].file)},
			TLS:      config.UpstreamTLS{Mode: "verify-full", CAFile: caFile},
			Labels:   map[string]string{"pci": "cde"},
			Logins: []config.UpstreamLogin{
				{Group: AgentsGroup, User: AgentRole, Password: config.Secret{File: filepath.Join(dataDir, logins[1].file)},
					ApprovedRole: AgentWriteRole},
				{Group: DBAGroup, User: DBARole, Password: config.Secret{File: filepath.Join(dataDir, logins[2].file)}},
			},
		},
	}, nil
}

// readOrMakePassword returns the password kept in file, or a new random
// one (fresh: to be written once the role has it).
func readOrMakePassword(file string) (password []byte, fresh bool, err error) {
	password, err = os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		var b [18]byte
		_, _ = rand.Read(b[:])
		return []byte(hex.EncodeToString(b[:])), true, nil
	case err != nil:
		return nil, false, err
	}
	return password, false, nil
}

// seedSQL creates the demo schema and fills it once. The PANs are the
// standard public test numbers.
const seedSQL = `
CREATE TABLE IF NOT EXISTS cards (
  id     serial PRIMARY KEY,
  holder text NOT NULL,
  pan    text NOT NULL,
  cvv    text NOT NULL,
  exp    text NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
  id      serial PRIMARY KEY,
  name    text NOT NULL,
  email   text NOT NULL,
  card_id integer REFERENCES cards(id),
  note    text
);
INSERT INTO cards (holder, pan, cvv, exp)
SELECT * FROM (VALUES
  ('Ada Lovelace',     '4242424242424242', '123',  '12/30'),
  ('Alan Turing',      '5555555555554444', '456',  '01/29'),
  ('Grace Hopper',     '378282246310005',  '7890', '06/28'),
  ('Edsger Dijkstra',  '6011111111111117', '321',  '09/31'),
  ('Barbara Liskov',   '3056930009020004', '654',  '03/27'),
  ('Donald Knuth',     '6200000000000005', '987',  '11/30'),
  ('Frances Allen',    '4000056655665556', '246',  '02/29'),
  ('Ken Thompson',     '2223003122003222', '135',  '08/28')
) AS v(holder, pan, cvv, exp)
WHERE NOT EXISTS (SELECT 1 FROM cards);
INSERT INTO customers (name, email, card_id, note)
SELECT c.holder, lower(replace(c.holder, ' ', '.')) || '@example.com', c.id,
       CASE WHEN c.id = 1 THEN 'called support, read card 4242 4242 4242 4242 aloud' END
FROM cards c
WHERE NOT EXISTS (SELECT 1 FROM customers);
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO ` + GatewayRole + `;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ` + GatewayRole + `;
GRANT CREATE ON SCHEMA public TO ` + GatewayRole + `;
-- Least privilege per group. The agents' login reads and nothing else:
-- no DML, no DDL, no temporary tables (TEMPORARY is PUBLIC's by default),
-- no sequences; the write role custos takes for approved statements holds
-- DML. Default privileges extend the same to tables created later by the
-- role that seeds (the cluster's superuser).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ` + AgentRole + `;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO ` + AgentWriteRole + `, ` + DBARole + `;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ` + AgentWriteRole + `, ` + DBARole + `;
GRANT CREATE ON SCHEMA public TO ` + DBARole + `;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ` + AgentRole + `;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO ` + AgentWriteRole + `, ` + DBARole + `;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO ` + AgentWriteRole + `, ` + DBARole + `;
REVOKE TEMPORARY ON DATABASE ` + Database + ` FROM PUBLIC;
GRANT TEMPORARY ON DATABASE ` + Database + ` TO ` + GatewayRole + `, ` + DBARole + `, ` + AgentWriteRole + `;
`
