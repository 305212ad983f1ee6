#!/usr/bin/env bash
# Verification throughput of taler-otp beside privacyIDEA 3.14's /validate/check, on the same
# machine in the same run, with the same load: wrk, CONNECTIONS (64) keep-alive connections.
# See README "Benchmarks".
#
#   contrib/verify-bench.sh
#
# 1. privacyIDEA (when ../shared/peers/privacyidea/ exists beside the project root, else this
#    half is skipped with a message): its own setup.sh installs and starts it (gunicorn on
#    127.0.0.1:5001, PostgreSQL 15 on 5432). This script enrols HOTP tokens (SHA1, 8 digits) with
#    known keys and measures POST /validate/check serial=…&pass=… for
#      wrong codes   one fixed wrong code to 64 tokens (max_failcount raised: no lockout), and
#      correct codes each the next unused code of a token, so each one is a first success.
#    The tokens are deleted at the end; privacyIDEA and its PostgreSQL are left as they were
#    found (stopped with stop.sh / pg_ctlcluster if this script started them).
# 2. taler-otp: the release build on a temporary embedded PostgreSQL, as contrib/loadtest.sh,
#    with [otp] VERIFY_MAX_FAILURES and VERIFY_DAILY_FAILURES at 2147483647, DEVICES HOTP
#    devices per set with known keys, and POST …/otp-devices/$ID/verifications for
#      correct codes      algorithm 3 (HOTP_WITHOUT_PRICE), each the next code of a device,
#      with-price codes   algorithm 4 (HOTP_WITH_PRICE), each the next code of a device, bound
#                         to a different amount every time ({"code","price"}),
#      wrong codes        one fixed wrong code to DEVICES devices (each one a counted mismatch).
# The codes are computed beforehand by contrib/verify-bench/verify_bench.py (RFC 4226, checked
# against the RFC's vectors first); contrib/verify-bench/verify.lua gives every wrk thread its
# own devices and keeps at most one request per device in flight, in counter order, and checks
# every answer (verified:true with the expected counter, or the expected rejection).
# Every scenario runs WARMUP unreported (on devices of its own for correct codes), then DURATION.
# The table (req/s, p50, p99, errors, ratio taler-otp / privacyIDEA) goes to stdout and to
# $OUT/summary.txt, with the checkpoints, autovacuums and autoanalyzes of taler-otp's database
# during each run (they take CPU and I/O from it); the raw wrk outputs stay beside it.
#
# Environment knobs (defaults in brackets):
#   DURATION [12s] per scenario, after a WARMUP [3s]   CONNECTIONS [64]   THREADS [2] (wrk's -t)
#   DEVICES [1000] taler-otp devices per set   PI_TOKENS [96] privacyIDEA tokens per set
#   MAX_RPS [60000] the rate the precomputed taler-otp codes must last for (codes per device =
#     MAX_RPS x seconds x 1.2 / DEVICES); a faster run reports "starved" requests as errors
#   PEER_DIR [<root>/../shared/peers/privacyidea]   PEER [auto; "skip" skips privacyIDEA]
#   OURS [run; "skip" skips taler-otp, e.g. to check the peer half alone]
#   PI_WORKERS, PI_THREADS [2, 1: setup.sh's defaults] privacyIDEA's gunicorn layout
#   PACE_MS [unset] each wrk connection waits a random 0 to 2 x PACE_MS ms after an answer before
#     its next request (independent tills instead of clients that come straight back; the
#     throughput is then the offered load, not the server's capacity)
#   WORKERS, POOL_SIZE, CACHE_TTL_MS, BATCH_GATHER_MS, WRITEBACK_PACE_MS, RUST_LOG [server
#     defaults; info] as in contrib/loadtest.sh
#   VERIFY_BENCH_DIR [target/verify-bench] where the outputs and summary.txt go
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=contrib/lib/serve.sh
. "$ROOT/contrib/lib/serve.sh"
cd "$ROOT"

DURATION="${DURATION:-12s}"
WARMUP="${WARMUP:-3s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
DEVICES="${DEVICES:-1000}"
PI_TOKENS="${PI_TOKENS:-96}"
PI_WRONG_TOKENS=64
MAX_RPS="${MAX_RPS:-60000}"
PI_MAX_RPS=300            # privacyIDEA measured about 50/s here; its codes last for 6x that
STRIDE=1000000            # taler-otp device i of a set starts at counter i * STRIDE
PEER_DIR="${PEER_DIR:-$ROOT/../shared/peers/privacyidea}"
PEER="${PEER:-auto}"
OURS="${OURS:-run}"
OUT="${VERIFY_BENCH_DIR:-$ROOT/target/verify-bench}"
HERE="$ROOT/contrib/verify-bench"
LUA="$HERE/verify.lua"
PY="$HERE/verify_bench.py"
PI_URL="http://127.0.0.1:${PI_PORT:-5001}"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'verify-bench: %s\n' "$*" >&2; exit 1; }

# seconds DURATION: "12s", "2m" or "12" as whole seconds.
seconds() {
    case "$1" in
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
DUR_S="$(seconds "$DURATION")"
WARM_S="$(seconds "$WARMUP")"
[[ "$DUR_S" =~ ^[0-9]+$ && "$WARM_S" =~ ^[0-9]+$ && "$DUR_S" -gt 0 ]] ||
    die "DURATION and WARMUP must be whole seconds (12s, 1m)"
# Every wrk thread needs more devices than connections (each device has one request in flight).
[ "$DEVICES" -ge $(( CONNECTIONS * 5 / 4 )) ] && [ "$PI_TOKENS" -ge $(( CONNECTIONS * 5 / 4 )) ] ||
    die "DEVICES and PI_TOKENS must be at least 1.25 x CONNECTIONS"
# codes BUDGET_RPS SECONDS COUNT: codes per device so that COUNT devices last SECONDS at BUDGET_RPS.
codes() { echo $(( ($1 * $2 * 12 / 10 + $3 - 1) / $3 + 2 )); }

for tool in python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}
if ! command -v wrk >/dev/null; then
    log "installing wrk (apt-get install -y wrk)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1 ||
        { as_root apt-get update >/dev/null 2>&1 &&
          as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1; } ||
        die "wrk is required (its Lua response() callback checks every answer)"
fi

python3 "$PY" selftest >&2

if [ "$PEER" = skip ]; then
    RUN_PEER=no
    PEER_NOTE="privacyIDEA skipped (PEER=skip): no ratios"
elif [ -f "$PEER_DIR/setup.sh" ]; then
    RUN_PEER=yes
    PEER_DIR="$(cd "$PEER_DIR" && pwd)"
else
    RUN_PEER=no
    PEER_NOTE="privacyIDEA skipped: $PEER_DIR/setup.sh not found (the peer folder lives beside the project root in CI and on dev machines): no ratios"
    log "$PEER_NOTE"
fi

mkdir -p "$OUT"
rm -f "$OUT"/*.out "$OUT/results.tsv" "$OUT/summary.txt" "$OUT/db-events.tsv"
WORK="$(mktemp -d /tmp/taler-otp-verify-bench.XXXXXX)"
chmod 755 "$WORK"   # as root the embedded cluster runs as `postgres`, which must reach $WORK/data
LOG_DIR="$WORK"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then LOG_DIR="$(mktemp -d /dev/shm/taler-otp-verify-bench.XXXXXX)"; fi
SERVER_LOG="$LOG_DIR/server.log"
: >"$OUT/server.log"

SERVER_PID=""
LOAD_PID=""
PI_TOKENS_ENROLLED=no
PI_WAS_RUNNING=""     # the gunicorn settings privacyIDEA ran with before, "" when it was stopped
PG_WAS_ONLINE=yes
PI_SETTINGS=""
PI_SETUP_SECONDS=""

pi_running() {
    local pidfile=/opt/pi-venv/pi/run/gunicorn.pid
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}
pg_online() {
    command -v pg_lsclusters >/dev/null &&
        pg_lsclusters -h 2>/dev/null | awk '$1==15 && $2=="main" && $4=="online" {f=1} END {exit !f}'
}

# Moves the server's log lines other than request lines to $OUT/server.log; empties the log.
keep_log() {
    [ -f "$SERVER_LOG" ] || return 0
    grep -vF ' served ' "$SERVER_LOG" >>"$OUT/server.log" || true
    : >"$SERVER_LOG"
}

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        log "stopping taler-otp (it stops its embedded PostgreSQL)"
    fi
    stop_serve "$SERVER_PID" "$WORK"
    SERVER_PID=""
}

# Leaves privacyIDEA (and the shared PostgreSQL) as they were found.
restore_peer() {
    [ "$RUN_PEER" = yes ] || return 0
    if [ "$PI_TOKENS_ENROLLED" = yes ] && pi_running; then
        log "privacyIDEA: deleting the benchmark tokens"
        timeout 300 python3 "$PY" pi-tokens "$PI_URL" /opt/pi-venv/pi/secrets.env delete \
            "$WORK"/pi-*.json >&2 || true
    fi
    PI_TOKENS_ENROLLED=no
    if [ -n "$PI_WAS_RUNNING" ]; then
        if pi_running && [ "$(cat /opt/pi-venv/pi/run/gunicorn.settings 2>/dev/null)" != "$PI_WAS_RUNNING" ]; then
            local w t
            w="$(sed -E 's/workers=([0-9]+).*/\1/' <<<"$PI_WAS_RUNNING")"
            t="$(sed -E 's/.*threads=([0-9]+).*/\1/' <<<"$PI_WAS_RUNNING")"
            log "privacyIDEA: restarting it with its former settings ($PI_WAS_RUNNING)"
            PI_WORKERS="$w" PI_THREADS="$t" timeout 300 bash "$PEER_DIR/setup.sh" >/dev/null 2>&1 || true
        fi
    elif pi_running; then
        log "privacyIDEA: stopping it (stop.sh), as it was not running before"
        timeout 60 bash "$PEER_DIR/stop.sh" >&2 || true
    fi
    if [ "$PG_WAS_ONLINE" = no ] && pg_online; then
        log "stopping PostgreSQL 15/main, which setup.sh started for this run"
        pg_ctlcluster --skip-systemctl-redirect 15 main stop >&2 || true
    fi
    RUN_PEER=done
}

cleanup() {
    local status=$?
    set +e
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    stop_server
    keep_log
    restore_peer
    rm -rf "$WORK"
    [ "$LOG_DIR" != "$WORK" ] && rm -rf "$LOG_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run SIDE SCENARIO LABEL URL MODE CODES STRIDE WARM_CODES [TOKEN INSTANCE]: WARMUP on the
# warm-up codes (not reported), then DURATION on CODES; one line in results.tsv.
run() {
    local side="$1" scenario="$2" label="$3" url="$4" mode="$5" codes="$6" stride="$7" warm="$8"
    shift 8
    local output="$OUT/$side-$scenario.out"
    log "$side, $label: warm-up $WARMUP, then $DURATION at $CONNECTIONS connections"
    wrk_run "$OUT/$side-$scenario.warmup.out" "$WARMUP" "$url" "$side" "$mode" "$warm" "$stride" "$@"
    drain "$url" "$side"
    # The 1-minute load average just before the run: well above 1 means that something else
    # was using the CPUs (a build, ...) and the figures are low.
    local load
    load="$(cut -d' ' -f1 /proc/loadavg)"
    awk -v l="$load" 'BEGIN {exit !(l > 1.5)}' &&
        log "load average $load before this run: something else is using the CPUs"
    local before after
    before="$(db_events "$side")"
    wrk_run "$output" "$DURATION" "$url" "$side" "$mode" "$codes" "$stride" "$@"
    if [ "$side" = ours ]; then
        after="$(db_events "$side")"
        # shellcheck disable=SC2086  # three numbers each
        printf '%s\t%s\n' "$label" "$(set -- $before $after; echo "$(( $4 - $1 )) $(( $5 - $2 )) $(( $6 - $3 ))")" \
            >>"$OUT/db-events.tsv"
    fi
    drain "$url" "$side"
    grep '^VERIFY' "$output" >&2 || true
    printf '%s\t%s\t%s\t%s\t%s\n' "$side" "$scenario" "$label" "$output" "$load" >>"$OUT/results.tsv"
}

# db_events SIDE: "CHECKPOINTS AUTOVACUUMS AUTOANALYZES" of taler-otp's embedded PostgreSQL so
# far: the checkpoints its log shows starting, and its tables' autovacuum and autoanalyze counts
# ("0 0 0" for privacyIDEA, whose database this script does not read; a count that cannot be
# read is 0). Both take CPU and I/O from a run: a checkpoint is followed by full-page images in
# the WAL, and the tables a run grows are vacuumed and analyzed during the next one.
db_events() {
    local data="$WORK/data/postgres" checkpoints=0 counts="0 0"
    if [ "$1" = ours ] && [ -f "$data/postmaster.pid" ]; then
        checkpoints="$(grep -c 'checkpoint starting' "$data/server.log" 2>/dev/null || true)"
        if embedded_pg_tools "$WORK" 2>/dev/null; then
            counts="$("$PSQL" -h "$PG_SOCKET" -p "$PG_PORT" \
                -U postgres -d taler -XAtc "SELECT coalesce(sum(autovacuum_count), 0) || ' ' ||
                    coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables" 2>/dev/null ||
                echo "0 0")"
        fi
    fi
    echo "${checkpoints:-0} $counts"
}

# wrk_run OUTPUT DURATION URL TARGET MODE CODES STRIDE [TOKEN INSTANCE]
wrk_run() {
    local output="$1" duration="$2" url="$3"
    shift 3
    local bound=$(( $(seconds "$duration") + 60 ))
    timeout "$bound" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 10s --latency \
        -s "$LUA" "$url" -- "$1" "$2" "$3" "$THREADS" "$4" "${@:5}" >"$output" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || die "wrk failed: $(cat "$output")"
    LOAD_PID=""
}

# drain URL SIDE: waits (at most 120 s) until the server has answered what wrk left in flight,
# so that no run measures the tail of the previous one.
drain() {
    local probe="$1/config"
    [ "$2" = pi ] && probe="$1/healthz/livez"
    curl -fsS -m 120 -o /dev/null "$probe" || log "drain: $probe did not answer"
    [ "$2" = ours ] && keep_log
    sleep 1
}

# --- taler-otp: build first, so that no compilation overlaps a measurement ------------------------
if [ "$OURS" != skip ]; then
    log "building (cargo build --release --bin taler-otp)"
    cargo build --release --bin taler-otp >&2
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/taler-otp"
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
        # Every wrong code is a counted failure: the benchmark must never reach a limit.
        echo "VERIFY_MAX_FAILURES = 2147483647"
        echo "VERIFY_DAILY_FAILURES = 2147483647"
        [ -n "${WORKERS:-}" ] && echo "WORKERS = $WORKERS"
        [ -n "${POOL_SIZE:-}" ] && echo "POOL_SIZE = $POOL_SIZE"
        [ -n "${CACHE_TTL_MS:-}" ] && echo "CACHE_TTL_MS = $CACHE_TTL_MS"
        [ -n "${BATCH_GATHER_MS:-}" ] && echo "BATCH_GATHER_MS = $BATCH_GATHER_MS"
        [ -n "${WRITEBACK_PACE_MS:-}" ] && echo "WRITEBACK_PACE_MS = $WRITEBACK_PACE_MS"
        true
    } >"$CONF"
    # Only the file configures this run.
    while read -r var; do unset "$var"; done < <(compgen -e | grep '^TALER_OTP_' || true)
    "$BIN" -c "$CONF" config show >"$WORK/config.txt" 2>&1 ||
        die "this build rejects [otp] VERIFY_MAX_FAILURES (no verification endpoint yet?): $(cat "$WORK/config.txt")"
    # The codes: computed now, before any measurement (both CPUs are free).
    OURS_CODES="$(codes "$MAX_RPS" "$DUR_S" "$DEVICES")"
    OURS_WARM_CODES="$(codes "$MAX_RPS" "$WARM_S" "$DEVICES")"
    log "precomputing taler-otp codes: $DEVICES devices per set, $OURS_CODES codes each ($OURS_WARM_CODES for warm-up sets)"
    mk() { python3 "$PY" make "$WORK/$1.tsv" "$WORK/$1.json" --prefix "$1" --count "$DEVICES" --stride "$STRIDE" "${@:2}"; }
    mk vbc --codes "$OURS_CODES" &
    mk_pid=$!
    mk vbp --codes "$OURS_CODES" --algorithm 4 || die "precomputing the codes failed"
    wait "$mk_pid" || die "precomputing the codes failed"
    mk vbcw --codes "$OURS_WARM_CODES"
    mk vbpw --codes "$OURS_WARM_CODES" --algorithm 4
    mk vbx --wrong
    python3 "$PY" make "$WORK/vbs.tsv" "$WORK/vbs.json" --prefix vbs --count 1 --codes 1 2>/dev/null
    python3 "$PY" make "$WORK/vbsx.tsv" "$WORK/vbsx.json" --prefix vbs --count 1 --wrong 2>/dev/null
fi

# --- privacyIDEA ------------------------------------------------------------------------------------
if [ "$RUN_PEER" = yes ]; then
    if pi_running; then PI_WAS_RUNNING="$(cat /opt/pi-venv/pi/run/gunicorn.settings 2>/dev/null || echo '?')"; fi
    pg_online || PG_WAS_ONLINE=no
    log "privacyIDEA: $PEER_DIR/setup.sh (installs on first use; log in $OUT/pi-setup.log)"
    started=$(date +%s)
    timeout 1200 bash "$PEER_DIR/setup.sh" >"$OUT/pi-setup.log" 2>&1 ||
        die "privacyIDEA's setup.sh failed: $(tail -n 20 "$OUT/pi-setup.log")"
    PI_SETUP_SECONDS=$(( $(date +%s) - started ))
    PI_SETTINGS="$(cat /opt/pi-venv/pi/run/gunicorn.settings)"
    log "privacyIDEA is up ($PI_SETTINGS) after ${PI_SETUP_SECONDS} s"
    PI_CODES="$(codes "$PI_MAX_RPS" "$DUR_S" "$PI_TOKENS")"
    PI_WARM_CODES="$(codes "$PI_MAX_RPS" "$WARM_S" "$PI_TOKENS")"
    python3 "$PY" make "$WORK/pi-c.tsv" "$WORK/pi-c.json" --prefix PEERVB-C --count "$PI_TOKENS" --codes "$PI_CODES"
    python3 "$PY" make "$WORK/pi-cw.tsv" "$WORK/pi-cw.json" --prefix PEERVB-CW --count "$PI_TOKENS" --codes "$PI_WARM_CODES"
    python3 "$PY" make "$WORK/pi-x.tsv" "$WORK/pi-x.json" --prefix PEERVB-X --count "$PI_WRONG_TOKENS" --wrong
    PI_TOKENS_ENROLLED=yes
    timeout 600 python3 "$PY" pi-tokens "$PI_URL" /opt/pi-venv/pi/secrets.env enrol "$WORK"/pi-*.json >&2
    # Sanity: one wrong code by hand, before the load (check.sh covers the rest).
    answer="$(curl -fsS -m 30 -A verify-bench "$PI_URL/validate/check" -d serial=PEERVB-X-0000 -d "pass=$(cut -f3 "$WORK/pi-x.tsv" | head -n1)")"
    case "$answer" in *'"REJECT"'*'wrong otp value'*|*'wrong otp value'*'"REJECT"'*) ;; *) die "privacyIDEA, wrong code: $answer" ;; esac
    drain "$PI_URL" pi
    run pi wrong "wrong codes" "$PI_URL" wrong "$WORK/pi-x.tsv" 0 "$WORK/pi-x.tsv"
    run pi correct "correct codes, HOTP (alg 3)" "$PI_URL" correct "$WORK/pi-c.tsv" 0 "$WORK/pi-cw.tsv"
    restore_peer   # privacyIDEA stops (if we started it) before taler-otp is measured
fi

# --- taler-otp ---------------------------------------------------------------------------------------
if [ "$OURS" != skip ]; then
    export RUST_LOG="${RUST_LOG:-info}"
    log "starting taler-otp serve (embedded PostgreSQL under $WORK/data, port $PORT)"
    "$BIN" -c "$CONF" serve >"$WORK/server.out" 2>>"$SERVER_LOG" &
    SERVER_PID=$!
    await_serve "$SERVER_PID" "$URL/config" "$SERVER_LOG" || die "no server"
    "$BIN" -c "$CONF" instance create bench --name "Benchmark" >/dev/null
    WRITE_TOKEN="$("$BIN" -c "$CONF" token create --instance bench --scope write --description verify-bench-seed)"
    # Verifications use what a point of sale holds: a token of scope order-pos (docs/api.md §7).
    TOKEN="$("$BIN" -c "$CONF" token create --instance bench --scope order-pos --description verify-bench)" ||
        die "could not create an order-pos token"
    log "seeding $(( 4 * DEVICES + DEVICES + 1 )) HOTP devices"
    timeout 600 python3 "$PY" seed "$URL" "$WRITE_TOKEN" bench "$WORK"/vb{c,cw,p,pw,x,s}.json
    # Sanity: a wrong code, the right one, the same again.
    verify() {
        curl -sS -m 30 -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d "{\"code\":\"$1\"}" "$URL/instances/bench/private/otp-devices/vbs-0000/verifications"
    }
    answer="$(verify "$(cut -f3 "$WORK/vbsx.tsv")")"
    [[ "$answer" =~ \"verified\":\ *false && "$answer" =~ mismatch ]] || die "wrong code answered: $answer"
    answer="$(verify "$(cut -f3 "$WORK/vbs.tsv")")"
    [[ "$answer" =~ \"verified\":\ *true ]] || die "right code answered: $answer"
    answer="$(verify "$(cut -f3 "$WORK/vbs.tsv")")"
    [[ "$answer" =~ \"verified\":\ *false && "$answer" =~ replayed ]] || die "replayed code answered: $answer"
    run ours correct "correct codes, HOTP (alg 3)" "$URL" correct "$WORK/vbc.tsv" "$STRIDE" "$WORK/vbcw.tsv" "$TOKEN" bench
    run ours price "correct codes, with price (alg 4)" "$URL" correct "$WORK/vbp.tsv" "$STRIDE" "$WORK/vbpw.tsv" "$TOKEN" bench
    run ours wrong "wrong codes" "$URL" wrong "$WORK/vbx.tsv" "$STRIDE" "$WORK/vbx.tsv" "$TOKEN" bench
    WORKERS_SHOWN="$(config_value "$WORK/config.txt" WORKERS)"
    POOL_SHOWN="$(config_value "$WORK/config.txt" POOL_SIZE)"
    GATHER_SHOWN="$(config_value "$WORK/config.txt" BATCH_GATHER_MS)"
    PACE_SHOWN="$(config_value "$WORK/config.txt" WRITEBACK_PACE_MS)"
    stop_server
fi

[ -s "$OUT/results.tsv" ] || die "nothing was measured"
{
    echo "verify benchmark: contrib/verify-bench.sh ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), shared by wrk, the server and its PostgreSQL; one server at a time"
    echo "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --timeout 10s (keep-alive), after $WARMUP of warm-up${PACE_MS:+; each connection waits 0 to $((2 * PACE_MS)) ms (PACE_MS=$PACE_MS) before its next request}"
    if [ -n "$PI_SETTINGS" ]; then
        echo "privacyIDEA 3.14: gunicorn $PI_SETTINGS, PostgreSQL 15, its setup.sh took ${PI_SETUP_SECONDS} s; $PI_TOKENS HOTP tokens (SHA1, 8 digits) for correct codes, $PI_WRONG_TOKENS for wrong ones"
    else
        echo "${PEER_NOTE:-privacyIDEA not measured}"
    fi
    if [ "$OURS" != skip ]; then
        echo "taler-otp: WORKERS=$WORKERS_SHOWN POOL_SIZE=$POOL_SHOWN BATCH_GATHER_MS=$GATHER_SHOWN WRITEBACK_PACE_MS=$PACE_SHOWN RUST_LOG=$RUST_LOG (request logs on), embedded PostgreSQL; $DEVICES HOTP devices per set, VERIFY_MAX_FAILURES = VERIFY_DAILY_FAILURES = 2147483647"
    fi
} >"$OUT/header.txt"
python3 "$PY" report "$OUT/results.tsv" "$OUT/header.txt" | tee "$OUT/summary.txt"
if [ -s "$OUT/db-events.tsv" ]; then
    {
        echo "taler-otp's PostgreSQL during each measured run: checkpoints started (its log), autovacuums and autoanalyzes of its tables (pg_stat_user_tables; reported late, so some may fall in the next run):"
        awk -F'\t' '{split($2, n, " "); printf "  %s: %s checkpoints, %s autovacuums, %s autoanalyzes\n", $1, n[1], n[2], n[3]}' "$OUT/db-events.tsv"
    } | tee -a "$OUT/summary.txt"
fi
