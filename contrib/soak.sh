#!/usr/bin/env bash
# Soak of taler-otp: the release build on a temporary embedded PostgreSQL with 1,000 instances
# and 10,000 devices, under a mixed load for DURATION (10 minutes); the server's RSS is sampled
# every 10 s and must not grow after the warm-up by more than MAX_GROWTH percent. See README
# "Soak".
#
#   contrib/soak.sh                      # 10 minutes
#   DURATION=60 WARMUP=20 contrib/soak.sh  # a quick try
#
# Environment knobs (defaults in brackets):
#   DURATION [600] seconds of load (also 90s, 10m)   WARMUP [120, or a fifth of a shorter run]
#   MAX_GROWTH [10] percent   CONNECTIONS [32]   THREADS [2] (wrk's -t)
#   INSTANCES [1000] (ten devices each)   WORKERS, POOL_SIZE, CACHE_TTL_MS [server defaults]
#   RUST_LOG [info: the request log stays on; it is counted by route and status, not kept]
#   SERVER_BIN [unset: cargo build --release] a taler-otp binary to run instead of building one
#   SOAK_DIR [target/soak] where rss.tsv, wrk.out, routes.tsv and summary.txt go
#   BENCH_LOCK [/tmp/taler-otp-bench.lock] held (flock) from the server's start to its stop, so
#   that the soak does not overlap contrib/loadtest.sh or contrib/verify-bench.sh runs
#
# Seeding: the instances and a `write` token each go straight into the database (one SQL
# transaction through psql; the secrets stay in a private temporary directory, never in a log),
# the devices through the HTTP API. The load is wrk with contrib/soak/mix.lua: GETs of codes
# (with faketime, with a price), lists, HOTP confirmations, verifications of correct and wrong
# codes, creates and deletes, PATCHes. Not part of .ci/run: it takes more than ten minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=contrib/lib/serve.sh
. "$ROOT/contrib/lib/serve.sh"
cd "$ROOT"

seconds() {
    case "$1" in
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
DURATION_S="$(seconds "${DURATION:-600}")"
if [ -n "${WARMUP:-}" ]; then
    WARMUP_S="$(seconds "$WARMUP")"
elif [ "$DURATION_S" -ge 600 ]; then
    WARMUP_S=120
else
    WARMUP_S=$((DURATION_S / 5))
fi
MAX_GROWTH="${MAX_GROWTH:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
INSTANCES="${INSTANCES:-1000}"
OUT="${SOAK_DIR:-$ROOT/target/soak}"
LOCK="${BENCH_LOCK:-/tmp/taler-otp-bench.lock}"
HERE="$ROOT/contrib/soak"
# Codes per verification device: each of the 2 * INSTANCES devices gets about one attempt per
# second at most (15 % of the requests), so this outlasts the run.
NCODES=$((DURATION_S + 100))

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'soak: %s\n' "$*" >&2; exit 1; }

for tool in python3 curl wrk flock; do
    command -v "$tool" >/dev/null || die "$tool is required (wrk: apt-get install wrk)"
done

COMMIT="commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), release build"
if [ -n "${SERVER_BIN:-}" ]; then
    BIN="$SERVER_BIN"
    [ -x "$BIN" ] || die "SERVER_BIN=$BIN is not an executable"
    COMMIT="$BIN (built from commit $(git -C "$(dirname "$BIN")" rev-parse --short HEAD 2>/dev/null || echo "?"), not here)"
else
    log "building (cargo build --release --bin taler-otp)"
    cargo build --release --bin taler-otp >&2
    BIN="$ROOT/target/release/taler-otp"
    if [ -n "$(git status --porcelain -- crates sql 2>/dev/null)" ]; then
        COMMIT="$COMMIT + uncommitted changes"
    fi
fi

mkdir -p "$OUT"
rm -f "$OUT"/{rss.tsv,wrk.out,routes.tsv,summary.txt,server.log}
WORK="$(mktemp -d /tmp/taler-otp-soak.XXXXXX)"
chmod 755 "$WORK"   # as root the cluster runs as `postgres`, which must reach $WORK/data
SECRETS="$WORK/secrets"
mkdir -m 700 "$SECRETS"
SERVER_PID=""
SAMPLER_PID=""
LOAD_PID=""
COUNTER_PID=""

cleanup() {
    local status=$?
    set +e
    for pid in "$LOAD_PID" "$SAMPLER_PID"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null
    done
    stop_serve "$SERVER_PID" "$WORK"
    [ -n "$COUNTER_PID" ] && wait "$COUNTER_PID" 2>/dev/null
    rm -rf "$WORK"
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
    [ -n "${WORKERS:-}" ] && echo "WORKERS = $WORKERS"
    [ -n "${POOL_SIZE:-}" ] && echo "POOL_SIZE = $POOL_SIZE"
    [ -n "${CACHE_TTL_MS:-}" ] && echo "CACHE_TTL_MS = $CACHE_TTL_MS"
    true
} >"$CONF"
# Only the file configures this run.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TALER_OTP_' || true)
export RUST_LOG="${RUST_LOG:-info}"

# The benchmarks' lock, on fd 9, closed for every process that may outlive this script.
exec 9>>"$LOCK"
if ! flock -n 9; then
    log "waiting for $LOCK (another benchmark is running)"
    flock 9
fi

# The server's log goes through a FIFO to awk, which counts the request lines by method, route
# and status (written to routes.tsv when the server exits) and keeps the other lines.
mkfifo "$WORK/log.fifo"
awk -v routes="$OUT/routes.tsv" -v other="$OUT/server.log" '
    / served / {
        method = ""; route = ""; status = ""
        if (match($0, /method=[A-Z]+/)) method = substr($0, RSTART + 7, RLENGTH - 7)
        if (match($0, /route="?[^" ]+/)) { route = substr($0, RSTART + 6, RLENGTH - 6); sub(/^"/, "", route) }
        if (match($0, /status=[0-9]+/)) status = substr($0, RSTART + 7, RLENGTH - 7)
        count[method "\t" route "\t" status]++
        next
    }
    { print >> other; fflush(other) }
    END { for (k in count) print k "\t" count[k] > routes }
' <"$WORK/log.fifo" 9>&- &
COUNTER_PID=$!

log "starting taler-otp serve (embedded PostgreSQL under $WORK/data, port $PORT)"
"$BIN" -c "$CONF" serve >"$WORK/server.out" 2>"$WORK/log.fifo" 9>&- &
SERVER_PID=$!
await_serve "$SERVER_PID" "$URL/readyz" "$OUT/server.log" || die "no server"

# --- seeding: instances and tokens through psql, devices through HTTP ----------------------------
embedded_pg_tools "$WORK" || die "no PostgreSQL tools"
log "seeding $INSTANCES instances with a token each and $((INSTANCES * 10)) devices"
python3 "$HERE/soak.py" seed "$URL" "$SECRETS" "$INSTANCES" "$NCODES" |
    "$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -X -q -v ON_ERROR_STOP=1 >/dev/null
python3 "$HERE/soak.py" devices "$URL" "$SECRETS"
DEVICES_SEEDED="$("$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -XAtc \
    "SELECT count(*) FROM otp_devices")"
log "devices in the database: $DEVICES_SEEDED"

# --- the load and the RSS samples ----------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load: wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s for $DURATION_S s; RSS every 10 s; warm-up $WARMUP_S s (load average $LOAD_BEFORE)"
STARTED="$(date +%s)"
(
    t=0
    while [ "$t" -le "$DURATION_S" ] && kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%s\t%s\n' "$t" "$(rss_kb)"
        t=$((t + 10))
        sleep "$((STARTED + t - $(date +%s)))" 2>/dev/null || true
    done
) >"$OUT/rss.tsv" 9>&- &
SAMPLER_PID=$!
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION_S}s" --timeout 10s --latency \
    -s "$HERE/mix.lua" "$URL" -- "$SECRETS/tokens.tsv" "$SECRETS/codes.tsv" "$THREADS" \
    >"$OUT/wrk.out" 9>&- &
LOAD_PID=$!
wait "$LOAD_PID" || die "wrk failed: $(cat "$OUT/wrk.out")"
LOAD_PID=""
wait "$SAMPLER_PID" || true
SAMPLER_PID=""
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
HWM="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
DEVICES_AFTER="$("$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -XAtc \
    "SELECT count(*) FROM otp_devices")"
VERIFIED_DB="$("$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler -XAtc \
    "SELECT count(*) FILTER (WHERE outcome = 'verified') || ' verified, ' || count(*) || ' in all' FROM otp_verifications" 2>/dev/null || echo '?')"

log "stopping the server"
stop_serve "$SERVER_PID" "$WORK"
SERVER_PID=""
wait "$COUNTER_PID" || true
COUNTER_PID=""
flock -u 9

{
    echo "taler-otp soak: contrib/soak.sh ($(date -u '+%Y-%m-%d %H:%M UTC'), $COMMIT)"
    echo "machine: $(nproc) CPUs, shared by wrk, the server and PostgreSQL; load average before $LOAD_BEFORE, after $LOAD_AFTER"
    echo "data: $INSTANCES instances, $DEVICES_SEEDED devices seeded, $DEVICES_AFTER at the end; verification rows: $VERIFIED_DB"
    echo "load: wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s --timeout 10s, contrib/soak/mix.lua; server defaults${WORKERS:+, WORKERS=$WORKERS}${POOL_SIZE:+, POOL_SIZE=$POOL_SIZE}${CACHE_TTL_MS:+, CACHE_TTL_MS=$CACHE_TTL_MS}, RUST_LOG=$RUST_LOG"
    echo "server VmHWM (peak RSS) at the end: $((HWM / 1024)) MiB"
} >"$OUT/summary.txt"
set +e
python3 "$HERE/soak.py" report "$OUT" "$WARMUP_S" "$MAX_GROWTH" >>"$OUT/summary.txt"
RESULT=$?
set -e
cat "$OUT/summary.txt"
exit "$RESULT"
