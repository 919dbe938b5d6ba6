package pgfilter

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
)

// provisionTimeout bounds one provisioning step (connect and run).
const provisionTimeout = 10 * time.Second

// provisioner keeps one PostgreSQL user per principal for the group logins
// that ask for it (config UpstreamLogin.PerPrincipal). A user is created or
// enabled with a fresh random password on its principal's first session
// and disabled after its last, so between sessions no credential for it
// exists anywhere. The mutex is held across the SQL: provisioning happens
// only at a principal's first connect and last disconnect, and an enable
// and a disable of the same user must never cross.
type provisioner struct {
	srv   *Server
	mu    sync.Mutex
	users map[string]*provisioned // by resource name, NUL, user name
}

type provisioned struct {
	sessions int
	password string
}

// principalUser is the PostgreSQL user name of a principal: readable (the
// subject, reduced to what needs no quoting) and unique (a hash of issuer
// and subject), within PostgreSQL's 63 bytes.
func principalUser(p *authn.Principal) string {
	h := sha256.Sum256([]byte(p.Issuer + "\x00" + p.Subject))
	var b strings.Builder
	for _, r := range strings.ToLower(p.Subject) {
		if b.Len() >= 32 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return "custos_u_" + b.String() + "_" + hex.EncodeToString(h[:5])
}

// acquire returns the credential of the principal's own user for a
// session, creating or enabling the user for the first session.
func (pv *provisioner) acquire(ctx context.Context, up *upstream, login *config.UpstreamLogin, p *authn.Principal) (user, password string, err error) {
	user = principalUser(p)
	key := up.res.Name + "\x00" + user
	pv.mu.Lock()
	defer pv.mu.Unlock()
	if u := pv.users[key]; u != nil {
		u.sessions++
		return user, u.password, nil
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	password = hex.EncodeToString(b[:])
	// user is [a-z0-9_] only; the comment carries the principal as a
	// quoted literal for whoever reads the catalog.
	id := pgx.Identifier{user}.Sanitize()
	sql := fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN
    CREATE ROLE %[2]s;
  END IF;
END $$;
ALTER ROLE %[2]s LOGIN INHERIT PASSWORD '%[3]s';
GRANT %[4]s TO %[2]s;
COMMENT ON ROLE %[2]s IS %[5]s;`, user, id, password, pgx.Identifier{login.User}.Sanitize(),
		quoteLiteral("custos principal "+p.Subject+" of "+p.Issuer+" (group login "+login.User+")"))
	if err := pv.exec(ctx, up, sql); err != nil {
		return "", "", fmt.Errorf("provision user for %s: %w", p.Subject, err)
	}
	pv.users[key] = &provisioned{sessions: 1, password: password}
	pv.srv.log.Info("principal's upstream user enabled", "principal", p.Subject, "resource", up.res.Name, "upstream_user", user)
	return user, password, nil
}

// release ends one session of user; after the last, the user can no longer
// log in and its password is gone.
func (pv *provisioner) release(up *upstream, user string) {
	key := up.res.Name + "\x00" + user
	pv.mu.Lock()
	defer pv.mu.Unlock()
	u := pv.users[key]
	if u == nil {
		return
	}
	if u.sessions--; u.sessions > 0 {
		return
	}
	delete(pv.users, key)
	ctx, cancel := context.WithTimeout(context.Background(), provisionTimeout)
	defer cancel()
	if err := pv.exec(ctx, up, "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" NOLOGIN PASSWORD NULL"); err != nil {
		// Its password lived only in this process, now dropped; the next
		// first session sets a new one.
		pv.srv.log.Error("principal's upstream user could not be disabled", "resource", up.res.Name, "upstream_user", user, "error", err)
		return
	}
	pv.srv.log.Info("principal's upstream user disabled", "resource", up.res.Name, "upstream_user", user)
}

// exec runs sql as the resource's own login.
func (pv *provisioner) exec(ctx context.Context, up *upstream, sql string) error {
	cfg, err := UpstreamConfig(up.res)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["application_name"] = "custos provisioning"
	ctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

// quoteLiteral quotes s as an escape string literal, which means the same
// whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "E'" + strings.ReplaceAll(s, "'", "''") + "'"
}
