package pgfilter

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
)

// upstreamConfig builds the pgconn configuration for a resource. TLS modes
// map to libpq's sslmode; there is never a fallback from TLS to plaintext.
func upstreamConfig(res *config.Resource) (*pgconn.Config, error) {
	host, port, err := net.SplitHostPort(res.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	kv := []string{
		"host=" + quoteConnValue(host),
		"port=" + quoteConnValue(port),
		"dbname=" + quoteConnValue(res.Database),
		"user=" + quoteConnValue(res.User),
		"sslmode=" + quoteConnValue(res.TLS.Mode),
	}
	if res.TLS.CAFile != "" {
		kv = append(kv, "sslrootcert="+quoteConnValue(res.TLS.CAFile))
	}
	// Keep the environment (PGPASSWORD, PGSERVICE...) out of it.
	cfg, err := pgconn.ParseConfigWithOptions(strings.Join(kv, " "), pgconn.ParseConfigOptions{})
	if err != nil {
		return nil, err
	}
	if res.TLS.ServerName != "" && cfg.TLSConfig != nil {
		cfg.TLSConfig.ServerName = res.TLS.ServerName
	}
	cfg.Fallbacks = nil
	cfg.Password = ""
	cfg.RuntimeParams = map[string]string{}
	return cfg, nil
}

func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// Settings custos gives every upstream session, naming whom it runs for.
// They are startup parameters (PostgreSQL takes any dotted name there as a
// placeholder setting), so they are in place before the first statement,
// and RESET, RESET ALL and DISCARD ALL return to them; custos refuses
// every client's attempt to change a custos.* setting (startup parameters
// are an allow-list, SET, RESET and set_config are refused whatever the
// policy says: invariants.go). Only the session itself reads them
// (current_setting, SHOW, pg_settings): unlike application_name, which
// pg_stat_activity shows every role, they tell other sessions nothing.
const (
	settingPrincipal = "custos.principal"  // the token's subject
	settingIssuer    = "custos.issuer"     // the token's issuer
	settingSessionID = "custos.session_id" // custos' session id, as in audit records
	settingAct       = "custos.act"        // the subject the token acts for, when it does
)

// credential is an upstream user and its password.
type credential struct{ user, password string }

// sessionSettings are the custos.* startup parameters of ss's upstream
// login.
func sessionSettings(ss *Session) map[string]string {
	m := map[string]string{
		settingSessionID: ss.ID,
	}
	if p := ss.Principal; p != nil {
		m[settingPrincipal] = p.Subject
		m[settingIssuer] = p.Issuer
		if p.Act != nil && p.Act.Subject != "" {
			m[settingAct] = p.Act.Subject
		}
	}
	return m
}

// connectUpstream logs in with the gateway-held credential of the
// session's login (the group's, or the resource's own) and hijacks the
// connection for relaying. params are the client's startup parameters,
// already checked; the custos.* settings are added last, so nothing the
// client sent can stand in for them.
//
// cred, when set, is the principal's own user (provision.go).
func (s *Server) connectUpstream(ctx context.Context, up *upstream, ss *Session, cred *credential, params map[string]string) (*pgconn.HijackedConn, error) {
	cfg := up.cfg.Copy()
	if cred != nil {
		cfg.User, cfg.Password = cred.user, cred.password
	} else {
		secret := up.res.Password
		if l := ss.Login; l != nil {
			cfg.User = l.User
			secret = l.Password
		}
		password, err := secret.Read()
		if err != nil {
			return nil, err
		}
		cfg.Password = password
	}
	cfg.RuntimeParams = make(map[string]string, len(params)+4)
	for k, v := range params {
		if !strings.HasPrefix(strings.ToLower(k), "custos.") {
			cfg.RuntimeParams[k] = v
		}
	}
	for k, v := range sessionSettings(ss) {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.UpstreamConnectTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := conn.SyncConn(ctx); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	hj, err := conn.Hijack()
	if err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return hj, nil
}

// cancelUpstream sends a CancelRequest for the session's upstream backend,
// over TLS when the session's upstream connection uses it.
func cancelUpstream(ctx context.Context, addr string, tlsCfg *tls.Config, pid uint32, secret []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	c := raw
	if tlsCfg != nil {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:], 8)
		binary.BigEndian.PutUint32(req[4:], sslRequestCode)
		if _, err := raw.Write(req[:]); err != nil {
			return err
		}
		var resp [1]byte
		if _, err := io.ReadFull(raw, resp[:]); err != nil {
			return err
		}
		if resp[0] != 'S' {
			return fmt.Errorf("upstream refused TLS for cancel request")
		}
		tc := tls.Client(raw, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		c = tc
	}
	msg := make([]byte, 12+len(secret))
	binary.BigEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.BigEndian.PutUint32(msg[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(msg[8:], pid)
	copy(msg[12:], secret)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	// The server closes the connection when it has processed the request.
	_, _ = io.Copy(io.Discard, c)
	return nil
}
