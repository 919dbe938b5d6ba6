// Package tests holds custos' end-to-end tests: real clients (psql,
// pgbench, pgx, node-postgres, postgres.js) talking to the real Postgres
// proxy in front of a real PostgreSQL cluster, and the `custos dev` binary
// run as a user would run it.
//
// The PostgreSQL server binaries, psql, pgbench and the Node.js client
// libraries in tests/node/node_modules come from `make deps`; a missing one
// fails the test that needs it, it never skips it.
package tests
