#!/usr/bin/env bash
# Installs what building and testing custos needs on Debian 12, and nothing more:
#   - PostgreSQL server binaries (initdb, postgres, pg_ctl under /usr/lib/postgresql/<ver>/bin),
#     the psql client and pgbouncer, which the tests and the benchmark start themselves;
#   - Chromium, for the headless browser test of the approvals web page;
#   - Node.js and npm (only when missing) and the client libraries in tests/node;
#   - the Go modules of the main module.
# Every step checks first, so a second run is a quick no-op. One line of output per step.
# Installing needs root; without it the script says what is missing and how to install it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

# Newest PostgreSQL server bin dir Debian installed, or nothing.
pg_bindir() {
	local d best=""
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ] || continue
		best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
	done
	printf '%s' "$best"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# 1. Debian packages.
missing=()
[ -n "$(pg_bindir)" ] || missing+=(postgresql)
have psql || missing+=(postgresql-client)
have pgbouncer || missing+=(pgbouncer)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ! have node; then
	missing+=(nodejs)
	have npm || missing+=(npm)
elif ! have npm; then
	missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
	log "debian packages: present (postgresql, postgresql-client, pgbouncer, chromium, node, npm)"
else
	if ! is_root; then
		die "missing Debian packages: ${missing[*]}; install them as root: apt-get update && apt-get install -y ${missing[*]}"
	fi
	log "debian packages: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Keep the packages' system services (postgresql on 5432, pgbouncer on 6432) from being
	# started by the install: tests and the benchmark start their own on free ports.
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [ ! -e "$policy" ]; then
		own_policy=1
		trap 'rm -f "$policy"' EXIT
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
	fi
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [ "$own_policy" = 1 ]; then
		rm -f "$policy"
		trap - EXIT
	fi
	[ -n "$(pg_bindir)" ] || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
fi

# 2. The system pgbouncer must not run or hold port 6432.
pgb_running() {
	local pidfile=/run/postgresql/pgbouncer.pid pid
	[ -r "$pidfile" ] || return 1
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = pgbouncer ]
}
pgb_enabled() {
	compgen -G '/etc/rc[2-5].d/S[0-9][0-9]pgbouncer' >/dev/null && return 0
	[ -d /run/systemd/system ] && { systemctl -q is-enabled pgbouncer.service 2>/dev/null ||
		systemctl -q is-enabled pgbouncer.socket 2>/dev/null ||
		systemctl -q is-active pgbouncer.socket 2>/dev/null; } && return 0
	return 1
}
if have pgbouncer && { pgb_running || pgb_enabled; } && ! is_root; then
	log "pgbouncer: warning: the system service runs or starts at boot (port 6432); as root: service pgbouncer stop && update-rc.d pgbouncer disable"
elif have pgbouncer && { pgb_running || pgb_enabled; }; then
	log "pgbouncer: stopping and disabling the system service"
	if [ -d /run/systemd/system ]; then
		systemctl disable --now pgbouncer.socket pgbouncer.service >/dev/null 2>&1 || true
	fi
	if pgb_running; then
		if [ -x /etc/init.d/pgbouncer ]; then
			/etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
		fi
		# Fallback: end the daemon named in the system pidfile (and only that one).
		if pgb_running; then
			kill "$(cat /run/postgresql/pgbouncer.pid)" 2>/dev/null || true
			for _ in 1 2 3 4 5 6 7 8 9 10; do pgb_running || break; sleep 0.2; done
		fi
	fi
	if command -v update-rc.d >/dev/null 2>&1 || [ -x /usr/sbin/update-rc.d ]; then
		update-rc.d pgbouncer disable >/dev/null 2>&1 || true
	fi
	! pgb_running || die "the system pgbouncer is still running"
else
	log "pgbouncer: system service not running"
fi

# 3. Node client libraries for the end-to-end tests.
node_dir=tests/node
if [ -f "$node_dir/package.json" ]; then
	stamp="$node_dir/node_modules/.package-lock.json" # written by npm on every install
	if [ -f "$node_dir/package-lock.json" ]; then
		if [ ! -d "$node_dir/node_modules" ] || [ ! -f "$stamp" ] ||
			[ "$node_dir/package-lock.json" -nt "$stamp" ] || [ "$node_dir/package.json" -nt "$stamp" ]; then
			log "npm: npm ci in $node_dir"
			(cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
		else
			log "npm: $node_dir/node_modules up to date"
		fi
	elif [ ! -d "$node_dir/node_modules" ] || [ "$node_dir/package.json" -nt "$node_dir/node_modules" ]; then
		log "npm: npm install in $node_dir (no package-lock.json)"
		(cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
	else
		log "npm: $node_dir/node_modules up to date"
	fi
else
	log "npm: no $node_dir/package.json, skipped"
fi

# 4. Go modules of the main module (a quick no-op when the module cache has them).
log "go: go mod download"
go mod download

log "ok (postgres binaries in $(pg_bindir))"
