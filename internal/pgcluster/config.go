package pgcluster

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Files pgcluster keeps in the data directory next to PostgreSQL's own.
const (
	confFile     = "custos.conf"               // settings, rewritten on every Start
	passwordFile = "custos-superuser-password" // superuser password, 0600
	portFile     = "custos-port"               // last port, reused when free
	logFile      = "custos-server.log"         // server output, appended
	certFile     = "server.crt"                // TLS certificate (Options.TLS)
	keyFile      = "server.key"                // TLS key (Options.TLS)
	hbaFile      = "pg_hba.conf"
	mainConfFile = "postgresql.conf"
	pidFile      = "postmaster.pid"
	versionFile  = "PG_VERSION"
)

// includeLine pulls custos.conf into postgresql.conf; being last, its
// settings win over initdb's.
const includeLine = "include '" + confFile + "'"

// maxConnections leaves room for tests that open many sessions.
const maxConnections = 200

// ErrInvalidSetting is returned for a setting name or value that cannot be
// written to postgresql.conf.
var ErrInvalidSetting = errors.New("pgcluster: invalid setting")

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// validateSettings checks names and values before anything is written.
func validateSettings(settings map[string]string) error {
	for name, value := range settings {
		if !settingName.MatchString(name) {
			return fmt.Errorf("%w: name %q", ErrInvalidSetting, name)
		}
		if strings.ContainsRune(value, 0) {
			return fmt.Errorf("%w: value of %s holds a NUL byte", ErrInvalidSetting, name)
		}
	}
	return nil
}

// confSettings are the settings pgcluster itself needs.
type confSettings struct {
	port       int
	socketDir  string
	tls        bool
	extra      map[string]string
	maxConns   int
	listenAddr string
}

// renderConf returns custos.conf: pgcluster's settings, then the caller's
// in name order (later lines win in postgresql.conf).
func renderConf(s confSettings) []byte {
	var b strings.Builder
	b.WriteString("# Written by custos pgcluster on every start; edits are lost.\n")
	line := func(name, value string) {
		fmt.Fprintf(&b, "%s = %s\n", name, quoteConfValue(value))
	}
	line("listen_addresses", s.listenAddr)
	line("port", strconv.Itoa(s.port))
	line("unix_socket_directories", s.socketDir)
	line("max_connections", strconv.Itoa(s.maxConns))
	line("password_encryption", "scram-sha-256")
	line("logging_collector", "off")
	line("log_destination", "stderr")
	if s.tls {
		line("ssl", "on")
		line("ssl_cert_file", certFile)
		line("ssl_key_file", keyFile)
	} else {
		line("ssl", "off")
	}
	if len(s.extra) > 0 {
		b.WriteString("# Options.Settings\n")
		for _, name := range slices.Sorted(maps.Keys(s.extra)) {
			line(name, s.extra[name])
		}
	}
	return []byte(b.String())
}

// quoteConfValue quotes a value for postgresql.conf: single quotes doubled,
// backslash and line breaks escaped (the file parser unescapes them).
func quoteConfValue(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `''`, "\n", `\n`, "\r", `\r`)
	return "'" + r.Replace(v) + "'"
}

// renderHBA returns pg_hba.conf: SCRAM for the unix socket and for loopback
// TCP, with or without TLS ("host" matches both), replication included.
func renderHBA() []byte {
	return []byte(`# Written by custos pgcluster on every start; edits are lost.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
`)
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral quotes an SQL string literal. With backslashes it uses the
// E'...' form so the result does not depend on standard_conforming_strings.
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}
