#!/usr/bin/env bash
# Compares PostgreSQL throughput direct, through pgbouncer and through custos, with the same
# pgbench run for all three:
#
#   pgbench -n -S -M prepared -c 4 -j 2 -T $BENCH_SECONDS   (select-only, prepared statements)
#
#   1. direct     pgbench -> PostgreSQL
#   2. pgbouncer  pgbench -> pgbouncer (session pool) -> PostgreSQL
#   3. custos     pgbench -> custos (token as the password) -> PostgreSQL
#
# The PostgreSQL is the demo database of `bin/custos dev` (data dir out/bench/custos), which is
# also the system under test. Every hop uses TLS: pgbench asks for sslmode=require (direct: the
# upstream DSN's verify-full), pgbouncer and custos verify the upstream's certificate.
# Each target gets a warm-up run, then one measured run. Results: a table on stdout and
# out/bench/results.json; pgbench and server logs in out/bench/.
#
# Then the masking benchmark: a SELECT of BENCH_MASK_ROWS (1,000,000) rows with a card number in
# each, streamed by psql directly and through custos (which masks every one), and the same rows by
# COPY TO STDOUT; 3 runs each, median wall time; target custos/direct <= 1.5 for the SELECT. And
# custos' peak RSS (VmHWM) after a 100,000-row result versus a 1,000,000-row one: it must not grow.
#
# Then the statement policy: the same pgbench select-only run, as a principal in group agents,
# through custos deciding every statement with the default policy versus custos dev --no-policy,
# restarted in turn on the same data dir, both without the audit journal (measured next) so that
# the policy's cost is what differs, BENCH_POLICY_ROUNDS (2) runs each; target on/off >= 0.9.
#
# Then the audit journal: the same run with audit on (the default: a plain read's record written,
# fsynced within 10ms; and every record fsynced first, with and without the group commit's
# delay) versus custos dev --no-audit, BENCH_AUDIT_ROUNDS (2) runs each, at each of
# BENCH_AUDIT_CLIENTS ("4 32") clients; target on/off >= 0.85.
#
# Called by `make bench` after `make build`, with the PostgreSQL bin dir and /usr/sbin in PATH.
# Settings: BENCH_SECONDS (15), BENCH_WARMUP_SECONDS (3), BENCH_SCALE (10), BENCH_MASK_ROWS (1000000),
# BENCH_POLICY_ROUNDS (2), BENCH_AUDIT_ROUNDS (2), BENCH_AUDIT_CLIENTS ("4 32").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_SECONDS=${BENCH_SECONDS:-15}
WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-3}
SCALE=${BENCH_SCALE:-10}
MASK_ROWS=${BENCH_MASK_ROWS:-1000000}
MASK_RUNS=3
POLICY_ROUNDS=${BENCH_POLICY_ROUNDS:-2}
AUDIT_ROUNDS=${BENCH_AUDIT_ROUNDS:-2}
read -r -a AUDIT_CLIENTS <<<"${BENCH_AUDIT_CLIENTS:-4 32}"
CLIENTS=4
JOBS=2
CUSTOS=bin/custos
OUT=out/bench
DATA_DIR=$OUT/custos
PGBENCH_ARGS=(-n -S -M prepared -c "$CLIENTS" -j "$JOBS")

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

for prog in pgbench psql pgbouncer; do
	command -v "$prog" >/dev/null 2>&1 ||
		die "$prog not in PATH; run \`make deps\`, and put the PostgreSQL bin dir and /usr/sbin in PATH (\`make bench\` does)"
done
[ -x "$CUSTOS" ] || die "$CUSTOS is missing: run \`make build\` first"
for n in "$BENCH_SECONDS" "$WARMUP_SECONDS" "$SCALE" "$MASK_ROWS" "$POLICY_ROUNDS" "$AUDIT_ROUNDS" "${AUDIT_CLIENTS[@]}"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_SCALE, BENCH_MASK_ROWS, BENCH_POLICY_ROUNDS, BENCH_AUDIT_ROUNDS and BENCH_AUDIT_CLIENTS must be positive integers"
done
((${#AUDIT_CLIENTS[@]} > 0)) || die "BENCH_AUDIT_CLIENTS must list at least one client count"
((MASK_ROWS >= 100000)) || die "BENCH_MASK_ROWS must be at least 100000 (the small RSS run streams 100,000 rows)"

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- cleanup: stop what this script started, by pid, whatever happens -------------------------
custos_pid=""
pgbouncer_pid=""
pgbouncer_dir=""

# stop_pid PID SIGNAL SECONDS: signal PID, wait up to SECONDS for it to exit, then SIGKILL it.
stop_pid() {
	local pid=$1 sig=$2 secs=$3 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid still running after SIG$sig and ${secs}s: killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if [ -n "$pgbouncer_pid" ]; then
		stop_pid "$pgbouncer_pid" TERM 10
	fi
	if [ -n "$custos_pid" ]; then
		# SIGINT: custos ends its sessions, then stops its PostgreSQL.
		stop_pid "$custos_pid" INT 45
		wait "$custos_pid" 2>/dev/null || true
	fi
	if [ -n "$pgbouncer_dir" ]; then
		rm -rf "$pgbouncer_dir"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port prints a loopback TCP port nothing listens on.
free_port() {
	local port i
	for ((i = 0; i < 100; i++)); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	die "no free loopback port found"
}

# --- 1. custos dev: the demo PostgreSQL and the system under test ------------------------------
# A fresh demo database every run: every run starts from the same state.
rm -rf "$DATA_DIR"
mkdir -p "$DATA_DIR"
# The demo PostgreSQL runs as the postgres user when this runs as root: let it traverse.
chmod 0711 out "$OUT" "$DATA_DIR"
log "starting custos dev (data dir $DATA_DIR, log $OUT/custos.log)"
"$CUSTOS" dev --data-dir "$DATA_DIR" \
	--pg-listen "127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$(free_port)" --admin-listen "127.0.0.1:$(free_port)" \
	>"$OUT/custos.log" 2>&1 &
custos_pid=$!

for ((i = 0; ; i++)); do
	if [ -f "$DATA_DIR/dev.env" ] && grep -q '^export CUSTOS_UPSTREAM_DSN=' "$DATA_DIR/dev.env"; then
		break
	fi
	if ! kill -0 "$custos_pid" 2>/dev/null; then
		tail -n 20 "$OUT/custos.log" >&2
		die "custos dev exited before it was ready (see $OUT/custos.log)"
	fi
	((i < 1200)) || die "custos dev not ready after 120s (see $OUT/custos.log)"
	sleep 0.1
done
# shellcheck source=/dev/null
. "$DATA_DIR/dev.env"
: "${CUSTOS_PG_HOST:?} ${CUSTOS_PG_PORT:?} ${CUSTOS_DATABASE:?} ${CUSTOS_UPSTREAM_DSN:?} ${CUSTOS_ADMIN_URL:?}"

# The upstream DSN is postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.
dsn_re='^postgres(ql)?://([^:@/]+):([^@/]*)@([^:/]+):([0-9]+)/[^?]*\?(.*)$'
[[ $CUSTOS_UPSTREAM_DSN =~ $dsn_re ]] || die "unexpected CUSTOS_UPSTREAM_DSN format"
up_user=${BASH_REMATCH[2]}
up_password=${BASH_REMATCH[3]}
up_host=${BASH_REMATCH[4]}
up_port=${BASH_REMATCH[5]}
up_ca=""
if [[ ${BASH_REMATCH[6]} =~ (^|&)sslrootcert=([^&]*) ]]; then
	up_ca=$(printf '%b' "${BASH_REMATCH[2]//%/\\x}") # percent-decoding
fi
[[ $up_password != *%* ]] || die "percent-encoded superuser password in CUSTOS_UPSTREAM_DSN is not supported"
[ -r "$up_ca" ] || die "upstream CA file not readable: $up_ca"
log "upstream PostgreSQL at $up_host:$up_port, custos at $CUSTOS_PG_HOST:$CUSTOS_PG_PORT"

export PGCONNECT_TIMEOUT=20 PGPASSFILE=/dev/null PGSERVICEFILE=/dev/null PSQLRC=/dev/null

# --- 2. pgbench tables, loaded directly, readable by the gateway role ---------------------------
log "pgbench -i -s $SCALE against the upstream"
pgbench -i -s "$SCALE" -q "$CUSTOS_UPSTREAM_DSN" >"$OUT/pgbench-init.log" 2>&1 ||
	{ tail -n 20 "$OUT/pgbench-init.log" >&2; die "pgbench -i failed"; }
psql -X -q -v ON_ERROR_STOP=1 -d "$CUSTOS_UPSTREAM_DSN" \
	-c 'GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO custos_gateway' ||
	die "GRANT to custos_gateway failed"

token=$("$CUSTOS" token --data-dir "$DATA_DIR" --sub bench --groups agents --ttl 2h)

# --- 3. pgbouncer, session pooling, in front of the same PostgreSQL ----------------------------
pgbouncer_dir=$(mktemp -d /tmp/custos-bench-pgbouncer.XXXXXX)
pgbouncer_port=$(free_port)
cp "$up_ca" "$pgbouncer_dir/upstream-ca.pem"
# Client TLS with the same certificate custos presents.
cp "$DATA_DIR/tls/server.crt" "$pgbouncer_dir/server.crt"
cp "$DATA_DIR/tls/server.key" "$pgbouncer_dir/server.key"
printf '"%s" "%s"\n' "$up_user" "$up_password" >"$pgbouncer_dir/userlist.txt"
cat >"$pgbouncer_dir/pgbouncer.ini" <<EOF
[databases]
$CUSTOS_DATABASE = host=$up_host port=$up_port dbname=$CUSTOS_DATABASE

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $pgbouncer_dir/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = $((CLIENTS * 2))
server_reset_query = DISCARD ALL
server_tls_sslmode = verify-full
server_tls_ca_file = $pgbouncer_dir/upstream-ca.pem
client_tls_sslmode = require
client_tls_cert_file = $pgbouncer_dir/server.crt
client_tls_key_file = $pgbouncer_dir/server.key
logfile = $pgbouncer_dir/pgbouncer.log
pidfile = $pgbouncer_dir/pgbouncer.pid
EOF
chmod 0600 "$pgbouncer_dir"/*
# pgbouncer refuses to run as root: run it as the postgres system user.
pgbouncer_cmd=(pgbouncer "$pgbouncer_dir/pgbouncer.ini")
if is_root; then
	id postgres >/dev/null 2>&1 || die "running as root needs a postgres system user to run pgbouncer as"
	chown -R postgres: "$pgbouncer_dir"
	pgbouncer_cmd=(setpriv --reuid=postgres --regid=postgres --init-groups "${pgbouncer_cmd[@]}")
fi
log "starting pgbouncer on 127.0.0.1:$pgbouncer_port (session pool mode)"
"${pgbouncer_cmd[@]}" >"$OUT/pgbouncer.out" 2>&1 &
pgbouncer_pid=$!
for ((i = 0; ; i++)); do
	(exec 3<>"/dev/tcp/127.0.0.1/$pgbouncer_port") 2>/dev/null && break
	if ! kill -0 "$pgbouncer_pid" 2>/dev/null; then
		cat "$OUT/pgbouncer.out" "$pgbouncer_dir/pgbouncer.log" >&2 2>/dev/null || true
		die "pgbouncer exited at start"
	fi
	((i < 200)) || die "pgbouncer not listening after 20s"
	sleep 0.1
done

# --- 4. the three runs ---------------------------------------------------------------------------
declare -A conninfo password
targets=(direct pgbouncer custos)
conninfo[direct]=$CUSTOS_UPSTREAM_DSN
password[direct]=""
conninfo[pgbouncer]="host=127.0.0.1 port=$pgbouncer_port dbname=$CUSTOS_DATABASE user=$up_user sslmode=require"
password[pgbouncer]=$up_password
conninfo[custos]="host=$CUSTOS_PG_HOST port=$CUSTOS_PG_PORT dbname=$CUSTOS_DATABASE user=bench sslmode=require"
password[custos]=$token

declare -A tps latency
for target in "${targets[@]}"; do
	logfile="$OUT/pgbench-$target.log"
	log "$target: warm-up ${WARMUP_SECONDS}s, then ${BENCH_SECONDS}s"
	PGPASSWORD=${password[$target]} pgbench "${PGBENCH_ARGS[@]}" -T "$WARMUP_SECONDS" "${conninfo[$target]}" \
		>"$OUT/pgbench-$target-warmup.log" 2>&1 ||
		{ tail -n 20 "$OUT/pgbench-$target-warmup.log" >&2; die "$target: warm-up failed"; }
	PGPASSWORD=${password[$target]} pgbench "${PGBENCH_ARGS[@]}" -T "$BENCH_SECONDS" "${conninfo[$target]}" \
		>"$logfile" 2>&1 ||
		{ tail -n 20 "$logfile" >&2; die "$target: pgbench failed"; }
	grep -q '^number of failed transactions: 0 ' "$logfile" ||
		{ cat "$logfile" >&2; die "$target: pgbench reported failed transactions"; }
	tps[$target]=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$logfile")
	latency[$target]=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$logfile")
	[ -n "${tps[$target]}" ] && [ -n "${latency[$target]}" ] ||
		{ cat "$logfile" >&2; die "$target: no tps or latency in the pgbench output"; }
done

# --- 5. masking: a large result with a card number in every row ----------------------------------
# The rows cycle through the standard test PANs of several brands, some written with separators;
# all are valid card numbers, so custos masks every one. ref is the same number with its check
# digit changed (not a card number): selecting it instead shows what inspecting costs when
# nothing has to be masked.
log "masking: loading bench_cards ($MASK_ROWS rows) directly"
psql -X -q -v ON_ERROR_STOP=1 -d "$CUSTOS_UPSTREAM_DSN" >"$OUT/mask-load.log" 2>&1 <<SQL ||
DROP TABLE IF EXISTS bench_cards;
CREATE TABLE bench_cards AS
SELECT id, holder, pan, left(pan, -1) || ((right(pan, 1)::int + 1) % 10)::text AS ref
FROM (SELECT i::int8 AS id, 'Holder ' || i AS holder,
             (ARRAY['4242424242424242', '5555555555554444', '378282246310005', '6011111111111117',
                    '3056930009020004', '6200000000000005', '4000 0566 5566 5556', '2223-0031-2200-3222'])[1 + i % 8] AS pan
      FROM generate_series(1, $MASK_ROWS) i) s;
ALTER TABLE bench_cards ADD PRIMARY KEY (id);
VACUUM ANALYZE bench_cards;
GRANT SELECT ON bench_cards TO custos_gateway;
SQL
	{ tail -n 20 "$OUT/mask-load.log" >&2; die "masking: loading bench_cards failed"; }

# psql_to TARGET OUTFILE ARGS...: psql against TARGET (direct or custos), rows to OUTFILE.
psql_to() {
	local target=$1 out=$2
	shift 2
	PGPASSWORD=${password[$target]} psql -X -q -A -t -v ON_ERROR_STOP=1 -d "${conninfo[$target]}" -o "$out" "$@"
}

# Masking must really be on: custos shows the last four digits only.
sample=$(PGPASSWORD=${password[custos]} psql -X -q -A -t -v ON_ERROR_STOP=1 -d "${conninfo[custos]}" \
	-c 'SELECT pan FROM bench_cards WHERE id IN (1, 2) ORDER BY id') || die "masking: query through custos failed"
[ "$sample" = $'************4444\n***********0005' ] ||
	die "masking: custos did not mask bench_cards.pan: $(printf '%q' "$sample")"

mask_select="SELECT id, holder, pan FROM bench_cards"
mask_select_ref="SELECT id, holder, ref FROM bench_cards"
# wall_seconds CMD...: runs CMD and prints its wall time in seconds.
wall_seconds() {
	local start=$EPOCHREALTIME
	"$@" || return 1
	awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.3f", e - s }'
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Timed: every row streamed to psql, which discards it. SELECT with FETCH_COUNT (psql reads it
# through a cursor, 10,000 rows per FETCH, instead of holding the whole result), the same SELECT
# of ref (no card number to mask), and COPY.
mask_methods=(select select_no_pan copy)
declare -A mask_median mask_runs
for method in "${mask_methods[@]}"; do
	for target in direct custos; do
		times=()
		for ((run = 1; run <= MASK_RUNS; run++)); do
			case $method in
			select) args=(-v FETCH_COUNT=10000 -c "$mask_select") ;;
			select_no_pan) args=(-v FETCH_COUNT=10000 -c "$mask_select_ref") ;;
			copy) args=(-c "\\copy ($mask_select) TO '/dev/null'") ;;
			esac
			t=$(wall_seconds psql_to "$target" /dev/null "${args[@]}") || die "masking: $method through $target failed"
			times+=("$t")
		done
		mask_runs[$method,$target]="${times[*]}"
		mask_median[$method,$target]=$(median "${times[@]}")
		log "masking: $method of $MASK_ROWS rows, $target: ${times[*]} s (median ${mask_median[$method,$target]})"
	done
done

# Peak RSS of the custos process after a 100,000-row and after a MASK_ROWS-row result, each one
# plain SELECT (a single result set), the peak reset before each (clear_refs 5) when the kernel
# lets us; otherwise the second figure is the peak over both.
vm_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$custos_pid/status"; }
reset_peak() { { echo 5 >"/proc/$custos_pid/clear_refs"; } 2>/dev/null; }
peak_reset=true
declare -A mask_hwm
for rows in 100000 "$MASK_ROWS"; do
	reset_peak || peak_reset=false
	psql_to custos "$OUT/mask-custos.out" -c "$mask_select ORDER BY id LIMIT $rows" ||
		die "masking: $rows-row SELECT through custos failed"
	mask_hwm[$rows]=$(vm_kb VmHWM)
	log "masking: custos VmHWM after $rows rows: ${mask_hwm[$rows]} kB (VmRSS now $(vm_kb VmRSS) kB)"
done
# What custos sent holds no full card number.
got_rows=$(wc -l <"$OUT/mask-custos.out")
[ "$got_rows" -eq "$MASK_ROWS" ] || die "masking: custos returned $got_rows rows, want $MASK_ROWS"
if grep -q -E '4242424242424242|5555555555554444|378282246310005|6011111111111117|3056930009020004|6200000000000005|4000 0566 5566 5556|2223-0031-2200-3222' "$OUT/mask-custos.out"; then
	die "masking: a full card number came through custos (see $OUT/mask-custos.out)"
fi
rm -f "$OUT/mask-custos.out"

# --- 6. statement policy on versus off ----------------------------------------------------------
# custos dev decides every statement with the default policy (the custos run above). The same
# pgbench run, as a principal in group agents, through custos with the policy and through custos
# dev --no-policy (statements relayed undecided), both --no-audit: with statement records fsynced
# both would wait for the disk alike. Only one custos dev can own the demo PostgreSQL,
# so custos is restarted on the same data dir (same database and tables) for each run, the modes
# alternating (off, on, off, on, ...) so that drift in the machine's speed hits both alike.
# restart_custos ARGS...: stops custos dev (and its PostgreSQL), starts it again with ARGS.
restart_custos() {
	stop_pid "$custos_pid" INT 45
	wait "$custos_pid" 2>/dev/null || true
	custos_pid=""
	rm -f "$DATA_DIR/dev.env"
	"$CUSTOS" dev --data-dir "$DATA_DIR" "$@" \
		--pg-listen "127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$(free_port)" --admin-listen "127.0.0.1:$(free_port)" \
		>>"$OUT/custos.log" 2>&1 &
	custos_pid=$!
	for ((i = 0; ; i++)); do
		[ -f "$DATA_DIR/dev.env" ] && grep -q '^export CUSTOS_UPSTREAM_DSN=' "$DATA_DIR/dev.env" && break
		kill -0 "$custos_pid" 2>/dev/null ||
			{ tail -n 20 "$OUT/custos.log" >&2; die "custos dev $* exited at start (see $OUT/custos.log)"; }
		((i < 1200)) || die "custos dev $* not ready after 120s (see $OUT/custos.log)"
		sleep 0.1
	done
	# shellcheck source=/dev/null
	. "$DATA_DIR/dev.env"
}
# compare_modes NAME ROUNDS CLIENTS MODE=ARGS...: ROUNDS rounds, each running the modes in order,
# custos dev restarted with the mode's ARGS (a space-separated list, may be empty) before the same
# pgbench run with CLIENTS clients as a principal in group agents; the TPS of each run is added to
# runs[NAME,MODE].
declare -A runs
compare_modes() {
	local name=$1 rounds=$2 clients=$3
	shift 3
	local round spec mode margs ptoken pconn plog t
	local args=(-n -S -M prepared -c "$clients" -j "$JOBS")
	for ((round = 1; round <= rounds; round++)); do
		for spec in "$@"; do
			mode=${spec%%=*} margs=${spec#*=}
			# shellcheck disable=SC2086 # the mode's arguments, split on purpose
			restart_custos $margs
			ptoken=$("$CUSTOS" token --data-dir "$DATA_DIR" --sub bench --groups agents --ttl 2h)
			pconn="host=$CUSTOS_PG_HOST port=$CUSTOS_PG_PORT dbname=$CUSTOS_DATABASE user=bench sslmode=require"
			plog="$OUT/pgbench-$name-$mode-$round.log"
			log "$name $mode (round $round of $rounds): warm-up ${WARMUP_SECONDS}s, then ${BENCH_SECONDS}s"
			PGPASSWORD=$ptoken pgbench "${args[@]}" -T "$WARMUP_SECONDS" "$pconn" >"$OUT/pgbench-$name-$mode-$round-warmup.log" 2>&1 ||
				{ tail -n 20 "$OUT/pgbench-$name-$mode-$round-warmup.log" >&2; die "$name $mode: warm-up failed"; }
			PGPASSWORD=$ptoken pgbench "${args[@]}" -T "$BENCH_SECONDS" "$pconn" >"$plog" 2>&1 ||
				{ tail -n 20 "$plog" >&2; die "$name $mode: pgbench failed"; }
			grep -q '^number of failed transactions: 0 ' "$plog" ||
				{ cat "$plog" >&2; die "$name $mode: pgbench reported failed transactions"; }
			t=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$plog")
			[ -n "$t" ] || { cat "$plog" >&2; die "$name $mode: no tps in the pgbench output"; }
			runs[$name,$mode]="${runs[$name,$mode]:+${runs[$name,$mode]} }$t"
			log "$name $mode (round $round): $t TPS"
		done
	done
}
compare_modes policy "$POLICY_ROUNDS" "$CLIENTS" "off=--no-policy --no-audit" "on=--no-audit"
declare -A policy_runs
policy_runs[off]=${runs[policy,off]}
policy_runs[on]=${runs[policy,on]}
ptoken=$("$CUSTOS" token --data-dir "$DATA_DIR" --sub bench --groups agents --ttl 2h)
pconn="host=$CUSTOS_PG_HOST port=$CUSTOS_PG_PORT dbname=$CUSTOS_DATABASE user=bench sslmode=require"
# The policy really was on in the "on" instance: DDL by an agent is refused with 42501 (a
# write would wait for approval instead).
refused=$(PGPASSWORD=$ptoken psql -X -q -A -t -d "$pconn" -c 'CREATE TABLE bench_policy_probe (x int)' 2>&1 || true)
[[ $refused == *"is not allowed for agents"* ]] ||
	die "policy on: DDL through custos was not refused: $(printf '%q' "$refused")"
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.3f", (NR > 0 ? s / NR : 0) }'; }
declare -A policy_tps
for mode in off on; do
	# shellcheck disable=SC2086 # a list of numbers
	policy_tps[$mode]=$(mean ${policy_runs[$mode]})
done

# --- 7. audit on versus off ---------------------------------------------------------------------
# The same pgbench run through custos dev keeping its audit journal (a record of every statement,
# its completion held back from the client until the record is kept) with the default durability
# (by what the statement touched: these plain reads' records written to the journal file before the
# completion, fsynced within audit.sync_interval, 10ms) and with every record fsynced before its
# completion (audit.sync_interval 0, group commit), versus custos dev --no-audit; alternating,
# BENCH_AUDIT_ROUNDS (2) runs each. The fsync-everything mode also runs without
# audit.commit_delay ("fsync-nodelay"), the group commit then fsyncing as soon as the one before
# ends. At 4 clients every statement round
# trip waits for a fsync of its own or of a small group; at 32, group commit shares them.
# Target on/off >= 0.85.
audit_modes=(off default fsync fsync-nodelay)
declare -A audit_tps
for clients in "${AUDIT_CLIENTS[@]}"; do
	compare_modes "audit-c$clients" "$AUDIT_ROUNDS" "$clients" "off=--no-audit" "fsync=--audit-sync-interval 0" \
		"fsync-nodelay=--audit-sync-interval 0 --audit-commit-delay 0" "default="
	# The audit really was on in the last instance ("default"): it recorded the run's statements.
	recorded=$(find "$DATA_DIR/audit/segments" -name '*.jsonl' | sort | tail -n 2 |
		xargs cat | grep -c '"event":"custos.db.statement"' || true)
	((recorded >= 1000)) || die "audit default: only ${recorded:-0} statement records in the journal's last segments"
	for mode in "${audit_modes[@]}"; do
		# shellcheck disable=SC2086 # a list of numbers
		audit_tps[$clients,$mode]=$(mean ${runs[audit-c$clients,$mode]})
	done
done

# --- 8. report -----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
custos_direct=$(ratio "${tps[custos]}" "${tps[direct]}")
custos_pgbouncer=$(ratio "${tps[custos]}" "${tps[pgbouncer]}")
pgbouncer_direct=$(ratio "${tps[pgbouncer]}" "${tps[direct]}")

printf '\npgbench %s -T %s, scale %s, TLS on every hop\n\n' "${PGBENCH_ARGS[*]}" "$BENCH_SECONDS" "$SCALE"
printf '%-10s %12s %18s\n' target TPS 'mean latency (ms)'
for target in "${targets[@]}"; do
	printf '%-10s %12.0f %18.3f\n' "$target" "${tps[$target]}" "${latency[$target]}"
done
printf '\ncustos/direct     %s\ncustos/pgbouncer  %s\npgbouncer/direct  %s\n' \
	"$custos_direct" "$custos_pgbouncer" "$pgbouncer_direct"

mask_select_ratio=$(ratio "${mask_median[select,custos]}" "${mask_median[select,direct]}")
mask_nopan_ratio=$(ratio "${mask_median[select_no_pan,custos]}" "${mask_median[select_no_pan,direct]}")
mask_copy_ratio=$(ratio "${mask_median[copy,custos]}" "${mask_median[copy,direct]}")
mask_hwm_ratio=$(ratio "${mask_hwm[$MASK_ROWS]}" "${mask_hwm[100000]}")
printf '\nmasking: %s rows with a card number in each, psql, TLS, median of %s runs\n\n' "$MASK_ROWS" "$MASK_RUNS"
printf '%-36s %10s %10s %14s\n' method 'direct (s)' 'custos (s)' custos/direct
printf '%-36s %10s %10s %14s\n' 'SELECT (FETCH_COUNT=10000)' "${mask_median[select,direct]}" "${mask_median[select,custos]}" "$mask_select_ratio"
printf '%-36s %10s %10s %14s\n' 'SELECT, no card number (ref)' "${mask_median[select_no_pan,direct]}" "${mask_median[select_no_pan,custos]}" "$mask_nopan_ratio"
printf '%-36s %10s %10s %14s\n' 'COPY TO STDOUT' "${mask_median[copy,direct]}" "${mask_median[copy,custos]}" "$mask_copy_ratio"
printf '\ncustos peak RSS (VmHWM): %s kB after 100000 rows, %s kB after %s rows (ratio %s)%s\n' \
	"${mask_hwm[100000]}" "${mask_hwm[$MASK_ROWS]}" "$MASK_ROWS" "$mask_hwm_ratio" \
	"$($peak_reset || echo '; the peak could not be reset between the two')"

policy_ratio=$(ratio "${policy_tps[on]}" "${policy_tps[off]}")
printf '\nstatement policy: pgbench %s -T %s through custos as an agent, mean of %s runs each\n\n' \
	"${PGBENCH_ARGS[*]}" "$BENCH_SECONDS" "$POLICY_ROUNDS"
printf '%-28s %12s   %s\n' custos 'mean TPS' runs
printf '%-28s %12.0f   %s\n' 'policy off (--no-policy)' "${policy_tps[off]}" "${policy_runs[off]}"
printf '%-28s %12.0f   %s\n' 'policy on (default policy)' "${policy_tps[on]}" "${policy_runs[on]}"
printf '(both --no-audit)\n'
printf '\npolicy on/off     %s (target >= 0.9)\n' "$policy_ratio"

declare -A audit_label=(
	[off]='audit off (--no-audit)'
	[default]='default: reads written, fsync within 10ms'
	[fsync]='every record fsynced first (1ms delay)'
	[fsync-nodelay]='every record fsynced first, no delay'
)
for clients in "${AUDIT_CLIENTS[@]}"; do
	printf '\naudit: pgbench -n -S -M prepared -c %s -j %s -T %s through custos as an agent, mean of %s runs each\n\n' \
		"$clients" "$JOBS" "$BENCH_SECONDS" "$AUDIT_ROUNDS"
	printf '%-46s %10s %8s   %s\n' custos 'mean TPS' '/off' runs
	for mode in "${audit_modes[@]}"; do
		printf '%-46s %10.0f %8s   %s\n' "${audit_label[$mode]}" "${audit_tps[$clients,$mode]}" \
			"$(ratio "${audit_tps[$clients,$mode]}" "${audit_tps[$clients,off]}")" "${runs[audit-c$clients,$mode]}"
	done
	printf '(target on/off >= 0.85)\n'
done

json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
	printf '{\n'
	printf '  "time": %s,\n' "$(json_string "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
	printf '  "pgbench": {"args": %s, "seconds": %s, "warmup_seconds": %s, "scale": %s, "clients": %s, "jobs": %s, "version": %s},\n' \
		"$(json_string "${PGBENCH_ARGS[*]}")" "$BENCH_SECONDS" "$WARMUP_SECONDS" "$SCALE" "$CLIENTS" "$JOBS" \
		"$(json_string "$(pgbench --version)")"
	printf '  "versions": {"custos": %s, "pgbouncer": %s},\n' \
		"$(json_string "$("$CUSTOS" version)")" "$(json_string "$(pgbouncer --version | head -n 1)")"
	printf '  "tls": "every hop",\n'
	printf '  "results": [\n'
	sep=""
	for target in "${targets[@]}"; do
		printf '%s    {"target": "%s", "tps": %s, "latency_ms": %s}' "$sep" "$target" "${tps[$target]}" "${latency[$target]}"
		sep=$',\n'
	done
	printf '\n  ],\n'
	printf '  "ratios": {"custos_direct": %s, "custos_pgbouncer": %s, "pgbouncer_direct": %s},\n' \
		"$custos_direct" "$custos_pgbouncer" "$pgbouncer_direct"
	printf '  "policy": {"principal_groups": ["agents"], "audit": false, "rounds": %s, "tps_off": [%s], "tps_on": [%s], "tps_off_mean": %s, "tps_on_mean": %s, "on_off": %s, "target_on_off": 0.9},\n' \
		"$POLICY_ROUNDS" "${policy_runs[off]// /, }" "${policy_runs[on]// /, }" "${policy_tps[off]}" "${policy_tps[on]}" "$policy_ratio"
	printf '  "audit": {"principal_groups": ["agents"], "rounds": %s, "jobs": %s, "commit_delay_fsync": "1ms", "sync_interval_default": "10ms", "target_on_off": 0.85, "by_clients": {\n' \
		"$AUDIT_ROUNDS" "$JOBS"
	sep=""
	for clients in "${AUDIT_CLIENTS[@]}"; do
		printf '%s    "%s": {' "$sep" "$clients"
		msep=""
		for mode in "${audit_modes[@]}"; do
			printf '%s"%s": {"tps": [%s], "tps_mean": %s, "on_off": %s}' "$msep" "$mode" "${runs[audit-c$clients,$mode]// /, }" \
				"${audit_tps[$clients,$mode]}" "$(ratio "${audit_tps[$clients,$mode]}" "${audit_tps[$clients,off]}")"
			msep=", "
		done
		printf '}'
		sep=$',\n'
	done
	printf '\n  }},\n'
	printf '  "masking": {\n'
	printf '    "rows": %s, "runs": %s, "client": "psql", "tls": true, "target_custos_direct": 1.5,\n' "$MASK_ROWS" "$MASK_RUNS"
	for method in "${mask_methods[@]}"; do
		printf '    "%s": {"direct_s": [%s], "custos_s": [%s], "direct_median_s": %s, "custos_median_s": %s, "custos_direct": %s},\n' \
			"$method" "${mask_runs[$method,direct]// /, }" "${mask_runs[$method,custos]// /, }" \
			"${mask_median[$method,direct]}" "${mask_median[$method,custos]}" \
			"$(ratio "${mask_median[$method,custos]}" "${mask_median[$method,direct]}")"
	done
	printf '    "custos_peak_rss_kb": {"rows_100000": %s, "rows_%s": %s, "ratio": %s, "peak_reset_between": %s}\n' \
		"${mask_hwm[100000]}" "$MASK_ROWS" "${mask_hwm[$MASK_ROWS]}" "$mask_hwm_ratio" "$peak_reset"
	printf '  }\n'
	printf '}\n'
} >"$OUT/results.json"
printf '\nresults: %s\n' "$OUT/results.json"
