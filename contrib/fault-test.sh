#!/usr/bin/env bash
# Fault test: two `taler-otp serve` processes under a mixed load while their PostgreSQL goes
# away, then the database compared with every answer (issue 13).
#
#   contrib/fault-test.sh
#
# Case "restart": one database, stopped with `pg_ctl -m immediate` mid-load and started again.
# Case "failover": a primary and a streaming standby made with pg_basebackup, synchronous
# replication (a commit is on both); the primary is stopped with `-m immediate` mid-load and the
# standby promoted. The servers are configured with both hosts and target_session_attrs=read-write
# (one in the key=value form, the other in the URL form) and find the new primary by themselves.
#
# contrib/fault-test/load.py drives creates, patches, deletes, GETs, lists, HOTP confirmations and
# verifications against both servers and logs every answer; contrib/fault-test/check.py compares
# the log with the database and prints the summary lines (writes acknowledged and found,
# duplicates, answers by status during the outage, time to recover). Exit status non-zero on any
# violation. About two minutes; needs PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup,
# psql) and python3. Runs PostgreSQL as `postgres` when started as root.
#
# Knobs: TALER_OTP_BIN=PATH (skip the build), PG_BINDIR, WARMUP (s before the fault, default 8),
# AFTER (s of load after the database is back, default 12), THREADS (default 12),
# KEEP_WORK=1 (keep the logs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=contrib/lib/serve.sh
. "$ROOT/contrib/lib/serve.sh"
cd "$ROOT"
HERE="$ROOT/contrib/fault-test"
WARMUP="${WARMUP:-8}"
AFTER="${AFTER:-12}"
THREADS="${THREADS:-12}"
# The longest a request may take while the database is away: the pool's checkout bound
# (DB_TIMEOUT_MS + connect_timeout per host + 0.75 s) for two hosts, rounded up.
BOUND=7

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'fault-test: %s\n' "$*" >&2; exit 1; }

PG_BINDIR="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"
[ -x "$PG_BINDIR/pg_basebackup" ] || die "no PostgreSQL server binaries (set PG_BINDIR)"
export PATH="$PG_BINDIR:$PATH"
command -v python3 >/dev/null || die "python3 is missing"

if [ -n "${TALER_OTP_BIN:-}" ]; then
    BIN="$TALER_OTP_BIN"
else
    log "building (cargo build --bin taler-otp)"
    cargo build --bin taler-otp >&2
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/taler-otp"
fi
[ -x "$BIN" ] || die "no binary at $BIN"
# Only the files configure the servers.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TALER_OTP_' || true)

WORK="$(mktemp -d /tmp/taler-otp-fault.XXXXXX)"
chmod 755 "$WORK"
mkdir "$WORK/pg"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$WORK/pg"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi
SERVERS=()
CLUSTERS=()

cleanup() {
    local status=$?
    set +e
    for pid in "${SERVERS[@]}"; do stop_serve "$pid" "$WORK"; done
    for dir in "${CLUSTERS[@]}"; do
        [ -f "$dir/postmaster.pid" ] && as_pg pg_ctl -D "$dir" stop -m immediate >/dev/null 2>&1
    done
    if [ -n "${KEEP_WORK:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# new_cluster NAME PORT [SETTING...]: initdb, the settings, started on 127.0.0.1:PORT.
new_cluster() {
    local name="$1" dir="$WORK/pg/$1" port="$2"; shift 2
    as_pg initdb -D "$dir" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    as_pg mkdir -p "$WORK/pg/sock"
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$WORK/pg/sock'"
        for setting in "$@"; do echo "$setting"; done
    } | as_pg tee -a "$dir/postgresql.conf" >/dev/null
    start_cluster "$name" "$port"
}

start_cluster() {
    local dir="$WORK/pg/$1"
    CLUSTERS+=("$dir")
    as_pg pg_ctl -D "$dir" -l "$WORK/pg/$1.log" -w -t 60 -o "-p $2" start >/dev/null
}

now() { date +%s.%N; }

# write_conf NAME PORT DB: the configuration of a server on PORT with the database string DB.
write_conf() {
    cat >"$WORK/$1.conf" <<CONF
[merchant]
SERVE = tcp
PORT = $2
BIND_TO = 127.0.0.1
[merchantdb-postgres]
CONFIG = $3
[otp]
DEFAULT_INSTANCE = admin
POOL_SIZE = 8
WORKERS = 2
DB_TIMEOUT_MS = 2000
CACHE_TTL_MS = 30000
VERIFY_MAX_FAILURES = 1000000
VERIFY_DAILY_FAILURES = 1000000
CONF
}

# serve NAME PORT: starts the server of $WORK/NAME.conf; waits for /config.
serve() {
    RUST_LOG="warn,otp_store=info" "$BIN" -c "$WORK/$1.conf" serve >"$WORK/$1.out" 2>"$WORK/$1.log" &
    SERVERS+=("$!")
    for _ in $(seq 1 300); do
        curl -fsS --max-time 2 "http://127.0.0.1:$2/config" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 20 "$WORK/$1.log" >&2
    die "$1 did not answer /config within 30 s"
}

stop_servers() {
    for pid in "${SERVERS[@]}"; do stop_serve "$pid" "$WORK"; done
    SERVERS=()
}

# run_case NAME DB_A DB_B CHECK_DB FAULT: servers on DB_A and DB_B, setup, load, FAULT (a
# function that takes the database away and brings it back, writing $WORK/NAME.events), check.
run_case() {
    local name="$1" db_a="$2" db_b="$3" check_db="$4" fault="$5"
    local token port_a port_b
    port_a="$(free_port)"; port_b="$(free_port)"
    write_conf "$name-a" "$port_a" "$db_a"
    write_conf "$name-b" "$port_b" "$db_b"
    "$BIN" -c "$WORK/$name-a.conf" dbinit >/dev/null
    token="$("$BIN" -c "$WORK/$name-a.conf" token create --instance admin --scope write --description fault-test)"
    serve "$name-a" "$port_a"
    serve "$name-b" "$port_b"
    local urls="http://127.0.0.1:$port_a,http://127.0.0.1:$port_b"
    python3 "$HERE/load.py" setup "$urls" "$token" "$WORK/$name.state"
    log "$name: load for ${WARMUP}s, then the fault, then ${AFTER}s"
    python3 "$HERE/load.py" run "$urls" "$token" "$WORK/$name.state" "$WORK/$name.jsonl" 600 "$THREADS" &
    local load=$!
    sleep "$WARMUP"
    "$fault" "$WORK/$name.events"
    sleep "$AFTER"
    # SIGTERM: the clients finish the request they are in, log it, and stop.
    kill -TERM "$load" 2>/dev/null
    wait "$load" || die "$name: the load generator failed"
    for pid in "${SERVERS[@]}"; do kill -0 "$pid" 2>/dev/null || die "$name: a server died"; done
    python3 "$HERE/check.py" "$name" "$WORK/$name.jsonl" "$WORK/$name.state" "$WORK/$name.events" \
        "$check_db" "$BOUND" || FAILED=$((FAILED + 1))
    grep -h "change listener" "$WORK/$name-a.log" "$WORK/$name-b.log" | tail -n 4 | sed "s/^/   $name: /" >&2 || true
    stop_servers
}

FAILED=0
DB_USER="user=postgres dbname=postgres"

# --- case 1: one database, stopped with -m immediate and started again ---------------------------
P1="$(free_port)"
new_cluster single "$P1" "fsync = on"
restart_single() {
    log "restart: pg_ctl stop -m immediate"
    echo "down $(now)" >"$1"
    as_pg pg_ctl -D "$WORK/pg/single" stop -m immediate >/dev/null
    sleep 2
    as_pg pg_ctl -D "$WORK/pg/single" -l "$WORK/pg/single.log" -w -t 60 -o "-p $P1" start >/dev/null
    echo "back $(now)" >>"$1"
    log "restart: started again"
}
run_case restart "host=127.0.0.1 port=$P1 $DB_USER" "postgres://postgres@127.0.0.1:$P1/postgres" \
    "host=127.0.0.1 port=$P1 $DB_USER" restart_single
as_pg pg_ctl -D "$WORK/pg/single" stop -m fast >/dev/null

# --- case 2: primary and synchronous standby; the primary dies, the standby is promoted ---------
P2="$(free_port)"; P3="$(free_port)"
new_cluster primary "$P2" "synchronous_standby_names = 'standby1'" "synchronous_commit = on"
as_pg pg_basebackup -h 127.0.0.1 -p "$P2" -U postgres -D "$WORK/pg/standby" -X stream -c fast
{
    echo "primary_conninfo = 'host=127.0.0.1 port=$P2 user=postgres application_name=standby1'"
    # Once promoted it has no standby of its own: it must not wait for one.
    echo "synchronous_standby_names = ''"
} | as_pg tee -a "$WORK/pg/standby/postgresql.auto.conf" >/dev/null
as_pg touch "$WORK/pg/standby/standby.signal"
start_cluster standby "$P3"
sync=""
for _ in $(seq 1 300); do
    sync="$(psql -X -At -d "host=127.0.0.1 port=$P2 $DB_USER" -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")"
    [ "$sync" = sync ] && break
    sleep 0.1
done
[ "$sync" = sync ] || die "the standby did not become synchronous"
fail_over() {
    log "failover: primary stopped with -m immediate"
    echo "down $(now)" >"$1"
    as_pg pg_ctl -D "$WORK/pg/primary" stop -m immediate >/dev/null
    sleep 1
    as_pg pg_ctl -D "$WORK/pg/standby" promote -w -t 60 >/dev/null
    echo "back $(now)" >>"$1"
    log "failover: standby promoted"
}
run_case failover \
    "host=127.0.0.1,127.0.0.1 port=$P2,$P3 $DB_USER target_session_attrs=read-write" \
    "postgres://postgres@127.0.0.1:$P2,127.0.0.1:$P3/postgres?target_session_attrs=read-write" \
    "host=127.0.0.1 port=$P3 $DB_USER" fail_over

if [ "$FAILED" -gt 0 ]; then
    echo "fault-test: $FAILED case(s) failed"
    exit 1
fi
echo "fault-test: both cases passed"
