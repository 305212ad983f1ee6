#!/usr/bin/env bash
# Load benchmark of taler-otp: the real server (release build) on a temporary embedded
# PostgreSQL, seeded with 2 instances, tokens and 11,500 devices, driven by wrk from a second
# process; the write scenarios beside pgbench on the same database. See README "Benchmarks".
#
#   contrib/loadtest.sh
#
# Environment knobs (defaults in brackets):
#   DURATION [12s] per scenario, after a WARMUP [3s] of the same load that is not reported
#   CONNECTIONS [64]   THREADS [2] (wrk threads)
#   WORKERS, POOL_SIZE, CACHE_TTL_MS, BATCH_GATHER_MS, WRITEBACK_PACE_MS, METRICS [server
#     defaults: CPUs, 16, 1000, 2, 1000, no]
#   RUST_LOG [info, the server default: request logs stay on]
#   LOADTEST_DIR [target/loadtest] where the outputs and summary.txt go
#
# Scenarios: (a) the constant-JSON ceiling route, (b) GET one device of algorithm 1 with
# faketime, (c) GET one of algorithm 2 with faketime and price, (d) the device list of an
# instance with 20 devices, (e) 80% GET one / 20% POST confirmations on HOTP devices;
# then the write ceiling, pgbench (the PostgreSQL binaries' own) running a one-statement
# prepared UPDATE ... RETURNING of the counter of 1,000 HOTP devices at the same connection
# count, and (f) POST confirmations spread over those 1,000 devices (beside it pgbench with the
# audit row such a confirmation appends), (g) POST confirmations of one device (the hot-row
# rate; pgbench on that one row is shown beside it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=contrib/lib/serve.sh
. "$ROOT/contrib/lib/serve.sh"
cd "$ROOT"

DURATION="${DURATION:-12s}"
WARMUP="${WARMUP:-3s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
OUT="${LOADTEST_DIR:-$ROOT/target/loadtest}"
DEVICES_PER_ALG=5000   # a1-0000 … a1-4999 (algorithm 1), a2-0000 … a2-4999 (algorithm 2)
HOTP_DEVICES=500       # h3-000 … h3-499 (algorithm 3), for the write mix
CONFIRM_DEVICES=1000   # c3-0000 … c3-0999 (algorithm 3), for the confirmations; g3-0, the hot row
SMALL_DEVICES=20       # s-00 … s-19 in the instance "small", for the list scenario
WRITE_SHARE=20         # percent of writes in the mix
LUA="$ROOT/contrib/loadtest/requests.lua"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'loadtest: %s\n' "$*" >&2; exit 1; }

for tool in python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# --- the load generator: wrk from Debian, else oha from crates.io ------------------------------
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}
TOOL=""
if command -v wrk >/dev/null; then
    TOOL=wrk
else
    log "installing wrk (apt-get install -y wrk)"
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1 ||
        { as_root apt-get update >/dev/null 2>&1 &&
          as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1; }; then
        TOOL=wrk
    fi
fi
if [ -z "$TOOL" ]; then
    OHA="$OUT/tools/bin/oha"
    if [ ! -x "$OHA" ] && ! command -v oha >/dev/null; then
        log "wrk unavailable; installing oha from crates.io (cargo install oha)"
        cargo install --locked --root "$OUT/tools" oha >&2 || die "neither wrk nor oha could be installed"
    fi
    [ -x "$OHA" ] || OHA="$(command -v oha)"
    TOOL=oha
fi
log "load generator: $TOOL"

# --- build ---------------------------------------------------------------------------------------
log "building (cargo build --release --bin taler-otp)"
cargo build --release --bin taler-otp >&2
BIN="$ROOT/target/release/taler-otp"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"   # absolute: pgbench runs from inside it
rm -f "$OUT"/*.out "$OUT/results.tsv"

# --- a temporary embedded database and the server ---------------------------------------------
WORK="$(mktemp -d /tmp/taler-otp-loadtest.XXXXXX)"
chmod 755 "$WORK"   # as root the cluster runs as `postgres`, which must reach $WORK/data
# The request log (one line per request, hundreds of MB per run) goes to memory, not to the
# disk, so that write-back stalls do not show up as latency; between scenarios everything but
# the request lines is kept in $OUT/server.log and the file is emptied.
LOG_DIR="$WORK"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then LOG_DIR="$(mktemp -d /dev/shm/taler-otp-loadtest.XXXXXX)"; fi
SERVER_LOG="$LOG_DIR/server.log"
: >"$OUT/server.log"
SERVER_PID=""
SAMPLER_PID=""
LOAD_PID=""

# Moves the server's log lines other than request lines to $OUT/server.log; empties the log.
keep_log() {
    [ -f "$SERVER_LOG" ] || return 0
    local served
    served="$(grep -cF ' served ' "$SERVER_LOG" || true)"
    grep -vF ' served ' "$SERVER_LOG" >>"$OUT/server.log" || true
    echo "[loadtest] $served request log lines dropped" >>"$OUT/server.log"
    : >"$SERVER_LOG"
}

cleanup() {
    local status=$?
    set +e
    for pid in "$LOAD_PID" "$SAMPLER_PID"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null
    done
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        log "stopping the server (it stops its embedded PostgreSQL)"
    fi
    stop_serve "$SERVER_PID" "$WORK"
    keep_log
    rm -rf "$WORK"
    [ "$LOG_DIR" != "$WORK" ] && rm -rf "$LOG_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
CONF="$WORK/taler-otp.conf"
{
    echo "[merchant]"
    echo "SERVE = tcp"
    echo "PORT = $PORT"
    echo "BIND_TO = 127.0.0.1"
    echo "[otp]"
    echo "DATA_DIR = $WORK/data"
    echo "BENCHMARK_ROUTE = yes"
    [ -n "${WORKERS:-}" ] && echo "WORKERS = $WORKERS"
    [ -n "${POOL_SIZE:-}" ] && echo "POOL_SIZE = $POOL_SIZE"
    [ -n "${CACHE_TTL_MS:-}" ] && echo "CACHE_TTL_MS = $CACHE_TTL_MS"
    [ -n "${BATCH_GATHER_MS:-}" ] && echo "BATCH_GATHER_MS = $BATCH_GATHER_MS"
    [ -n "${WRITEBACK_PACE_MS:-}" ] && echo "WRITEBACK_PACE_MS = $WRITEBACK_PACE_MS"
    [ -n "${METRICS:-}" ] && echo "METRICS = $METRICS"
    true
} >"$CONF"
# Only the file configures this run.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TALER_OTP_' || true)
export RUST_LOG="${RUST_LOG:-info}"

log "starting taler-otp serve (embedded PostgreSQL under $WORK/data, port $PORT)"
"$BIN" -c "$CONF" serve >"$WORK/server.out" 2>>"$SERVER_LOG" &
SERVER_PID=$!
await_serve "$SERVER_PID" "$URL/config" "$SERVER_LOG" || die "no server"

# --- instances, tokens, devices ------------------------------------------------------------------
"$BIN" -c "$CONF" instance create bench --name "Benchmark" >/dev/null
"$BIN" -c "$CONF" instance create small --name "Small" >/dev/null
BENCH_TOKEN="$("$BIN" -c "$CONF" token create --instance bench --scope write --description loadtest)"
SMALL_TOKEN="$("$BIN" -c "$CONF" token create --instance small --scope readonly --description loadtest)"
SMALL_WRITE="$("$BIN" -c "$CONF" token create --instance small --scope write --description seed)"
log "seeding $((2 * DEVICES_PER_ALG)) TOTP + $((HOTP_DEVICES + CONFIRM_DEVICES + 1)) HOTP devices in 'bench', $SMALL_DEVICES in 'small'"
python3 contrib/loadtest/seed.py "$URL" "$BENCH_TOKEN" bench \
    "a1:1:$DEVICES_PER_ALG:4" "a2:2:$DEVICES_PER_ALG:4" "h3:3:$HOTP_DEVICES:3" \
    "c3:3:$CONFIRM_DEVICES:4" "g3:3:1:1" >&2
python3 contrib/loadtest/seed.py "$URL" "$SMALL_WRITE" small "s:1:$SMALL_DEVICES:2" >&2

# Sanity: the ceiling's body is as long as a real answer, and the real answer carries a code.
REAL="$(curl -fs -H "Authorization: Bearer $BENCH_TOKEN" "$URL/instances/bench/private/otp-devices/a1-0000?faketime=1700000000")"
CONST="$(curl -fs "$URL/bench/constant")"
case "$REAL" in *otp_code*) ;; *) die "GET one answered without otp_code: $REAL" ;; esac
log "answer sizes: GET one ${#REAL} bytes, ceiling ${#CONST} bytes"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
TICKS="$(getconf CLK_TCK)"

sleep 2
IDLE_RSS="$(rss_kb)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average: $LOAD_BEFORE"

# --- pgbench, the write ceiling: the PostgreSQL binaries' own, on the same database ------------
# pgbench and psql sit beside the postgres binary that runs the cluster (contrib/lib/serve.sh).
embedded_pg_tools "$WORK" || die "no PostgreSQL tools"
[ -n "$PGBENCH" ] || die "pgbench not found beside the cluster's postgres nor on PATH"
BENCH_SERIAL="$("$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -XAtc \
    "SELECT instance_serial FROM instances WHERE instance_id = 'bench'")"
# The statement a confirmation commits, reduced to its core: one prepared UPDATE ... RETURNING
# of one counter, by primary key, spread over the same 1,000 devices (or on the one hot row).
cat >"$OUT/pgbench-spread.sql" <<SQL
\set d random(0, $((CONFIRM_DEVICES - 1)))
UPDATE otp_devices SET otp_ctr = otp_ctr + 1 WHERE instance_serial = $BENCH_SERIAL AND otp_device_id = 'c3-' || lpad(:d::text, 4, '0') RETURNING otp_ctr;
SQL
# The same with the audit row an HOTP confirmation appends in its statement (docs/audit.md):
# what the database does for one audited confirmation; shown beside (f) when the schema has it.
AUDIT_APPEND="$("$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -XAtc \
    "SELECT to_regprocedure('audit_append(text,text,text,bigint,text,text)') IS NOT NULL")"
cat >"$OUT/pgbench-audit.sql" <<SQL
\set d random(0, $((CONFIRM_DEVICES - 1)))
WITH taken AS (UPDATE otp_devices SET otp_ctr = otp_ctr + 1 WHERE instance_serial = $BENCH_SERIAL AND otp_device_id = 'c3-' || lpad(:d::text, 4, '0') RETURNING otp_device_id, otp_ctr - 1 AS otp_ctr) SELECT t.otp_ctr, audit_append('bench', 'confirmation_issued', t.otp_device_id, NULL, '127.0.0.1', jsonb_build_object('otp_ctr', t.otp_ctr)::text) FROM taken t;
SQL
cat >"$OUT/pgbench-hot.sql" <<SQL
UPDATE otp_devices SET otp_ctr = otp_ctr + 1 WHERE instance_serial = $BENCH_SERIAL AND otp_device_id = 'g3-0' RETURNING otp_ctr;
SQL
log "write ceiling: $PGBENCH -M prepared -c $CONNECTIONS -j $THREADS (socket $PG_SOCKET, port $PG_PORT)"
# Transactions the database has committed or rolled back so far (the server's and pgbench's).
db_xacts() {
    "$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -XAtc \
        "SELECT pg_stat_force_next_flush(); SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'taler'" |
        tail -n1
}

# load OUTPUT DURATION SCENARIO TOKEN INSTANCE: runs the load generator in the background.
load() {
    local output="$1" duration="$2" scenario="$3" token="$4" instance="$5"
    if [ "$scenario" = pgbench-spread ] || [ "$scenario" = pgbench-hot ] ||
        [ "$scenario" = pgbench-audit ]; then
        # pgbench logs every transaction's latency (for p50/p99) under $output.log.*
        rm -f "$output".log.*
        ( cd "$OUT" && "$PGBENCH" -n -M prepared -c "$CONNECTIONS" -j "$THREADS" \
            -T "${duration%s}" -l --log-prefix "$output.log" -f "$OUT/$scenario.sql" \
            -h "$PG_SOCKET" -p "$PG_PORT" -U postgres taler >"$output" 2>&1 ) &
    elif [ "$TOOL" = wrk ]; then
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency -s "$LUA" "$URL" -- \
            "$scenario" "$token" "$instance" "$DEVICES_PER_ALG" "$HOTP_DEVICES" "$WRITE_SHARE" \
            "$CONFIRM_DEVICES" >"$output" &
    else
        local auth="Authorization: Bearer $token"
        local devices="/instances/$instance/private/otp-devices"
        local args=(-z "$duration" -c "$CONNECTIONS" --no-tui --output-format json -H "$auth")
        case "$scenario" in
            ceiling) "$OHA" "${args[@]}" "$URL/bench/constant" >"$output" & ;;
            get1) "$OHA" "${args[@]}" --rand-regex-url "$URL$devices/a1-[0-4][0-9]{3}\\?faketime=17[0-9]{8}" >"$output" & ;;
            get2) "$OHA" "${args[@]}" --rand-regex-url "$URL$devices/a2-[0-4][0-9]{3}\\?faketime=17[0-9]{8}&price=KUDOS%3A[1-9][0-9]\\.[0-9]{2}" >"$output" & ;;
            list) "$OHA" "${args[@]}" "$URL$devices" >"$output" & ;;
            # oha cannot mix methods: the fallback runs the confirmations alone.
            mix) "$OHA" "${args[@]}" -m POST -T application/json -d '{}' \
                     --rand-regex-url "$URL$devices/h3-[0-4][0-9]{2}/confirmations" >"$output" & ;;
            confirm) "$OHA" "${args[@]}" -m POST -T application/json -d '{}' \
                     --rand-regex-url "$URL$devices/c3-0[0-9]{3}/confirmations" >"$output" & ;;
            hot) "$OHA" "${args[@]}" -m POST -T application/json -d '{}' \
                     "$URL$devices/g3-0/confirmations" >"$output" & ;;
        esac
    fi
    LOAD_PID=$!
    wait "$LOAD_PID" || die "$scenario: the load generator failed: $(cat "$output")"
    LOAD_PID=""
}

# run KEY LABEL SCENARIO TOKEN INSTANCE: a warm-up of WARMUP (not reported; fills the caches
# as a server in service has them), then the measured run of DURATION.
run() {
    local key="$1" label="$2" scenario="$3" token="$4" instance="$5"
    local output="$OUT/$key.out"
    log "scenario $key: $label (warm-up $WARMUP, then $DURATION, $CONNECTIONS connections)"
    load "$OUT/$key.warmup.out" "$WARMUP" "$scenario" "$token" "$instance"
    ( while kill -0 "$SERVER_PID" 2>/dev/null; do rss_kb; sleep 0.2; done ) >"$OUT/$key.rss" &
    SAMPLER_PID=$!
    local before after xacts_before xacts_after
    # The database's backends flush their statistics about once a second once idle: wait, so
    # that the warm-up's transactions are not counted in the run's.
    sleep 1.1
    xacts_before="$(db_xacts)"
    before="$(cpu_ticks)"
    load "$output" "$DURATION" "$scenario" "$token" "$instance"
    after="$(cpu_ticks)"
    sleep 1.1 # the server's backends flush their statistics at most once a second
    xacts_after="$(db_xacts)"
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    local peak
    peak="$(sort -n "$OUT/$key.rss" | tail -n1)"
    local cpu
    cpu="$(awk -v a="$after" -v b="$before" -v t="$TICKS" 'BEGIN {printf "%.2f", (a - b) / t}')"
    local tool="$TOOL"
    case "$scenario" in pgbench-*) tool=pgbench ;; esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$label" "$tool" "$output" "$cpu" "${peak:-0}" \
        "$((xacts_after - xacts_before - 1))" >>"$OUT/results.tsv"
    keep_log
}

run ceiling "(a) ceiling: constant JSON, no auth, no DB" ceiling "$BENCH_TOKEN" bench
run get1 "(b) GET one, alg 1, faketime" get1 "$BENCH_TOKEN" bench
run get2 "(c) GET one, alg 2, faketime+price" get2 "$BENCH_TOKEN" bench
run list "(d) list, instance of $SMALL_DEVICES devices" list "$SMALL_TOKEN" small
run mix "(e) ${WRITE_SHARE}% POST confirmations (HOTP) + GET" mix "$BENCH_TOKEN" bench
run pgbench "write ceiling: pgbench UPDATE, $CONFIRM_DEVICES rows" pgbench-spread "" bench
run confirm "(f) POST confirmations, $CONFIRM_DEVICES HOTP devices" confirm "$BENCH_TOKEN" bench
if [ "$AUDIT_APPEND" = t ]; then
    run pgbench-audit "pgbench UPDATE + audit_append, $CONFIRM_DEVICES rows" pgbench-audit "" bench
fi
run pgbench-hot "pgbench UPDATE, one row" pgbench-hot "" bench
run hot "(g) POST confirmations, one HOTP device" hot "$BENCH_TOKEN" bench

PEAK_RSS="$(cut -f6 "$OUT/results.tsv" | sort -n | tail -n1)"
HWM="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
"$BIN" -c "$CONF" config show >"$WORK/config.txt"
WORKERS_SHOWN="$(config_value "$WORK/config.txt" WORKERS)"
POOL_SHOWN="$(config_value "$WORK/config.txt" POOL_SIZE)"
TTL_SHOWN="$(config_value "$WORK/config.txt" CACHE_TTL_MS)"
GATHER_SHOWN="$(config_value "$WORK/config.txt" BATCH_GATHER_MS)"
PACE_SHOWN="$(config_value "$WORK/config.txt" WRITEBACK_PACE_MS)"
{
    echo "taler-otp load benchmark: contrib/loadtest.sh ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), shared by $TOOL, the server and PostgreSQL"
    echo "load: $TOOL -t$THREADS -c$CONNECTIONS -d$DURATION (keep-alive), random devices among $((2 * DEVICES_PER_ALG)) + $HOTP_DEVICES HOTP; writes: $CONFIRM_DEVICES HOTP devices, one hot device"
    echo "write ceiling: pgbench -n -M prepared -c $CONNECTIONS -j $THREADS -T ${DURATION%s} on the same database ($("$PGBENCH" --version))"
    echo "load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "server: WORKERS=$WORKERS_SHOWN POOL_SIZE=$POOL_SHOWN CACHE_TTL_MS=$TTL_SHOWN BATCH_GATHER_MS=$GATHER_SHOWN WRITEBACK_PACE_MS=$PACE_SHOWN RUST_LOG=$RUST_LOG (request logs on, to a file under ${LOG_DIR%/*})"
    echo "server RSS: idle before load $((IDLE_RSS / 1024)) MiB, peak under load $((PEAK_RSS / 1024)) MiB (VmHWM $((HWM / 1024)) MiB)"
} >"$OUT/header.txt"
python3 contrib/loadtest/report.py "$OUT/results.tsv" "$OUT/header.txt" | tee "$OUT/summary.txt"
