#!/usr/bin/env bash
# The database's half of a verification, alone: pgbench calling otp_verify_batch() directly, in
# batches of correct HOTP codes (each the next counter of its device, so every attempt is a first
# success that advances its counter, prunes, records and audits), on the embedded database that
# `taler-otp serve` brings up. No HTTP, no wrk: what a batch costs PostgreSQL, with less of the
# noise of a machine shared by three processes. See README "Benchmarks".
#
#   contrib/verify-bench/function-bench.sh [OLD_MIGRATION.sql]
#
# With OLD_MIGRATION.sql (a migration that defines otp_verify_batch and audit_append_batch, e.g.
# sql/migrations/0016_verify_batch_in_one_call.sql), those two definitions are loaded beside the
# current ones under other names, and ROUNDS runs of each alternate on the same database, so the
# two versions are compared in one run (the ratio is current / old).
#
# Environment knobs (defaults in brackets):
#   BATCHES ["1 16"] batch sizes (16: a batch at 64 connections and two workers)
#   CLIENTS [2] pgbench clients (one per batcher of the two default workers; each on devices of
#     its own, so that no two batches wait for the same rows)
#   DURATION [5] seconds per run   ROUNDS [3] runs of each function per batch size
#   FUNCTION_BENCH_DIR [target/function-bench] where summary.txt and the raw outputs go
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=contrib/lib/serve.sh
. "$ROOT/contrib/lib/serve.sh"
cd "$ROOT"

OLD="${1:-}"
BATCHES="${BATCHES:-1 16}"
CLIENTS="${CLIENTS:-2}"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
OUT="${FUNCTION_BENCH_DIR:-$ROOT/target/function-bench}"
PER_CLIENT=1000

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'function-bench: %s\n' "$*" >&2; exit 1; }

[ -z "$OLD" ] || [ -f "$OLD" ] || die "no such file: $OLD"
for batch in $BATCHES; do
    [ "$batch" -ge 1 ] && [ "$batch" -le "$PER_CLIENT" ] || die "batch sizes are 1 to $PER_CLIENT"
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/*.out "$OUT/summary.txt"

log "building (cargo build --release --bin taler-otp)"
cargo build --release --bin taler-otp >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/taler-otp"

WORK="$(mktemp -d /tmp/taler-otp-function-bench.XXXXXX)"
chmod 755 "$WORK"   # as root the cluster runs as `postgres`, which must reach $WORK/data
SERVER_PID=""
cleanup() {
    local status=$?
    set +e
    stop_serve "$SERVER_PID" "$WORK"
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
CONF="$WORK/taler-otp.conf"
printf '[merchant]\nSERVE = tcp\nPORT = %s\nBIND_TO = 127.0.0.1\n[otp]\nDATA_DIR = %s\n' \
    "$PORT" "$WORK/data" >"$CONF"
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TALER_OTP_' || true)
log "starting taler-otp serve (embedded PostgreSQL under $WORK/data)"
RUST_LOG=warn "$BIN" -c "$CONF" serve >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
await_serve "$SERVER_PID" "http://127.0.0.1:$PORT/config" "$WORK/server.log" || die "no server"
"$BIN" -c "$CONF" instance create bench >/dev/null

embedded_pg_tools "$WORK" || die "no PostgreSQL tools"
[ -n "$PGBENCH" ] || die "pgbench not found beside the cluster's postgres nor on PATH"
sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET" -p "$PG_PORT" -U postgres -d taler "$@"; }

# Devices b1 … bN of instance `bench` (HOTP, counter 1000), written directly: the function reads
# no key. bench_call(fn, first, n) calls fn with the next code of devices first … first + n - 1,
# as the server would (every counter around the stored one computed), and fails unless every
# attempt verified.
DEVICES=$((CLIENTS * PER_CLIENT))
log "$DEVICES HOTP devices; functions: otp_verify_batch${OLD:+ and the one of $OLD}"
sql <<SQL
INSERT INTO otp_devices (instance_serial, otp_device_id, description, otp_key, otp_key_digest,
                         otp_algorithm, otp_ctr)
SELECT i.instance_serial, 'b' || g, 'function bench', decode(md5(g::text), 'hex'),
       sha256(decode(md5(g::text), 'hex')), 3, 1000
  FROM instances i, generate_series(1, $DEVICES) AS g
 WHERE i.instance_id = 'bench';
CREATE FUNCTION bench_args(p_first INTEGER, p_n INTEGER, OUT ids TEXT[], OUT ctrs BIGINT[])
    LANGUAGE plpgsql AS \$\$
DECLARE
    c BIGINT;
BEGIN
    ids := '{}';
    ctrs := '{}';
    FOR g IN p_first .. p_first + p_n - 1 LOOP
        SELECT d.otp_ctr INTO c
          FROM otp_devices d JOIN instances i USING (instance_serial)
         WHERE i.instance_id = 'bench' AND d.otp_device_id = 'b' || g;
        ids := ids || ('b' || g);
        ctrs := ctrs || c;
    END LOOP;
END
\$\$;
SQL

# bench_<name>(first, n): one batch through function <fn>.
wrapper() {
    local name="$1" fn="$2"
    sql <<SQL
CREATE FUNCTION bench_$name(p_first INTEGER, p_n INTEGER) RETURNS BIGINT
    LANGUAGE plpgsql AS \$\$
DECLARE
    a RECORD;
    n INTEGER := p_n;
    verified BIGINT;
BEGIN
    SELECT * INTO a FROM bench_args(p_first, p_n);
    SELECT count(*) INTO verified
      FROM $fn(array_fill('bench'::text, ARRAY[n]), a.ids, array_fill(now(), ARRAY[n]),
               array_fill(2::smallint, ARRAY[n]), array_fill(''::text, ARRAY[n]),
               (SELECT array_agg(format('{%s}', c) ORDER BY o)
                  FROM unnest(a.ctrs) WITH ORDINALITY AS u(c, o)),
               array_fill('{}'::text, ARRAY[n]),
               (SELECT array_agg(c - 10 ORDER BY o) FROM unnest(a.ctrs) WITH ORDINALITY AS u(c, o)),
               (SELECT array_agg(c + 26 ORDER BY o) FROM unnest(a.ctrs) WITH ORDINALITY AS u(c, o)),
               array_fill(NULL::text, ARRAY[n]), array_fill('192.0.2.1'::text, ARRAY[n]),
               array_fill(NULL::bigint, ARRAY[n]), array_fill(2147483647, ARRAY[n]),
               array_fill(2147483647, ARRAY[n]), array_fill(10, ARRAY[n])) AS v
     WHERE v.outcome = 'verified';
    IF verified <> n THEN
        RAISE EXCEPTION 'only % of % attempts verified', verified, n;
    END IF;
    RETURN verified;
END
\$\$;
SQL
}
wrapper current otp_verify_batch
FUNCTIONS="current"
if [ -n "$OLD" ]; then
    # The old definitions under other names; the old batch function calls the old append.
    python3 - "$OLD" >"$WORK/old.sql" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
out = []
for name in ("audit_append_batch", "otp_verify_batch"):
    m = re.search(r"CREATE (?:OR REPLACE )?FUNCTION %s\(.*?\n\$\$;\n" % name, text, re.S)
    if not m:
        sys.exit("no definition of %s in %s" % (name, sys.argv[1]))
    body = m.group(0).replace("FUNCTION %s(" % name, "FUNCTION %s_old(" % name, 1)
    out.append(body.replace("audit_append_batch(a_", "audit_append_batch_old(a_"))
print("\n".join(out))
PY
    sql -f "$WORK/old.sql"
    wrapper old otp_verify_batch_old
    FUNCTIONS="current old"
fi

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT/runs.tsv"
for batch in $BATCHES; do
    blocks=$((PER_CLIENT / batch))
    for round in $(seq 1 "$ROUNDS"); do
        for fn in $FUNCTIONS; do
            script="$OUT/bench-$fn-$batch.sql"
            printf '\\set blk random(0, %d)\nSELECT bench_%s((:client_id %% %d) * %d + :blk * %d + 1, %d);\n' \
                "$((blocks - 1))" "$fn" "$CLIENTS" "$PER_CLIENT" "$batch" "$batch" >"$script"
            output="$OUT/$fn-$batch-$round.out"
            "$PGBENCH" -n -M prepared -h "$PG_SOCKET" -p "$PG_PORT" -U postgres \
                -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" -f "$script" taler >"$output" 2>&1 ||
                { cat "$output" >&2; die "pgbench failed ($fn, batch $batch)"; }
            tps="$(awk '/^tps = / {print $3}' "$output")"
            log "batch $batch, round $round, $fn: $tps batches/s"
            printf '%s\t%s\t%s\t%s\n' "$batch" "$round" "$fn" "$tps" >>"$OUT/runs.tsv"
        done
    done
done

{
    echo "function benchmark: contrib/verify-bench/function-bench.sh ${OLD} ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "machine: $(nproc) CPUs; load average before: $LOAD_BEFORE"
    echo "pgbench -n -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, $ROUNDS runs per function and batch size, alternating; every attempt a correct HOTP code, first success"
    echo
    printf '%-6s %-8s %14s %16s %s\n' batch function "batches/s" "attempts/s" "(runs)"
    awk -F'\t' '
        { key = $1 "\t" $3; sum[key] += $4; n[key]++; runs[key] = runs[key] sprintf(" %.0f", $4);
          if (!($1 in seen)) { order[++k] = $1; seen[$1] = 1 } }
        END {
            for (i = 1; i <= k; i++) {
                b = order[i]
                for (f = 0; f < 2; f++) {
                    fn = f == 0 ? "current" : "old"
                    key = b "\t" fn
                    if (!(key in n)) continue
                    mean[key] = sum[key] / n[key]
                    printf "%-6s %-8s %14.0f %16.0f %s\n", b, fn, mean[key], mean[key] * b, runs[key]
                }
                if ((b "\told") in n)
                    printf "%-6s ratio current / old: %.2f\n", b, mean[b "\tcurrent"] / mean[b "\told"]
            }
        }' "$OUT/runs.tsv"
} | tee "$OUT/summary.txt"
