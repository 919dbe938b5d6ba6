// Package pgcluster runs a real, throwaway PostgreSQL cluster as a child
// process: the database behind `custos dev` and behind every test that
// needs Postgres on the wire.
//
// Start finds the server binaries (pg_config --bindir, then the highest
// /usr/lib/postgresql/*/bin, then PATH), runs initdb when the data directory
// holds no PG_VERSION, and starts `postgres -D Dir` directly (not pg_ctl), so
// the process belongs to the caller:
//
//	Start
//	  -> find binaries, resolve the account the server runs as
//	  -> prepare Dir (created 0700; parents made traversable when root)
//	  -> initdb --auth=scram-sha-256 --pwfile (first start only)
//	  -> rewrite pg_hba.conf and custos.conf (included from postgresql.conf)
//	  -> TLS: server.crt/server.key from internal/selfsigned (Options.TLS)
//	  -> pick the port, clear a stale postmaster.pid, exec postgres
//	  -> poll with pgx until it accepts the superuser over TCP (<= 30s)
//	Stop
//	  -> SIGINT (fast shutdown), wait; SIGKILL to it and its children on timeout
//
// Authentication is SCRAM-SHA-256 everywhere: the bootstrap superuser
// "postgres" gets a random password that is kept in Dir
// (custos-superuser-password, mode 0600) so a later Start on the same Dir
// reuses the cluster. The server listens on 127.0.0.1 only, plus a unix
// socket in Dir (or in a short directory under /tmp when Dir is too long for
// a socket path). A port chosen automatically is kept in Dir
// (custos-port) and reused on the next Start when it is still free.
//
// PostgreSQL refuses to run as root. When the caller is root (CI, this
// project's containers) initdb and postgres run as the "postgres" system
// user through a process credential; Dir is chowned to it and every
// directory above Dir must be traversable by it (Start checks and says
// which one is not). StartForTest creates its directories that way.
//
// The server's output goes to Options.Logger, one record per line, and to
// custos-server.log in Dir; a failed start reports the tail of it. On Linux
// the server gets SIGINT when the process that started it dies
// (Pdeathsig), so an interrupted test run does not leave clusters behind.
//
// Settings are written to custos.conf on every Start; Options.Settings
// come last and win. Durability settings are the caller's choice:
// StartForTest turns fsync, synchronous_commit and full_page_writes off,
// Start leaves them at PostgreSQL's defaults.
package pgcluster
