# Shared by the contrib/ scripts that run `taler-otp serve` on a temporary embedded database.
# Source it; it defines functions only.

# stop_serve PID WORK: stops the server PID (SIGTERM, up to 30 s, then SIGKILL), then, should it
# not have stopped its embedded PostgreSQL under WORK/data/postgres, stops that (fast shutdown).
stop_serve() {
    local server_pid="$1" work="$2"
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        for _ in $(seq 1 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid"
    fi
    local pidfile="$work/data/postgres/postmaster.pid"
    if [ -f "$pidfile" ]; then
        local pg_pid
        pg_pid="$(head -n1 "$pidfile")"
        if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
            kill -INT "$pg_pid"
            for _ in $(seq 1 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
        fi
    fi
    return 0
}

# await_serve PID URL LOG: waits (up to 60 s) until URL answers, while the server PID runs.
# Returns 1, with LOG on standard error, when the server exits first or does not come up.
await_serve() {
    local server_pid="$1" url="$2" log_file="$3"
    for _ in $(seq 1 600); do
        curl -fs "$url" >/dev/null 2>&1 && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$log_file" >&2
            echo "taler-otp serve exited" >&2
            return 1
        fi
        sleep 0.1
    done
    curl -fs "$url" >/dev/null 2>&1 && return 0
    echo "taler-otp serve did not answer $url within 60 s" >&2
    return 1
}

# embedded_pg_tools WORK: for the embedded cluster under WORK/data/postgres, sets PG_PID, PG_PORT
# and PG_SOCKET (from its postmaster.pid: lines 1, 4 and 5) and PSQL and PGBENCH (beside the
# postgres binary that runs it, else on PATH; PGBENCH empty when there is none). Returns 1 with a
# message when the cluster or psql is missing.
embedded_pg_tools() {
    local pidfile="$1/data/postgres/postmaster.pid" bindir
    [ -f "$pidfile" ] || { echo "no running cluster: $pidfile is missing" >&2; return 1; }
    PG_PID="$(head -n1 "$pidfile")"
    PG_PORT="$(sed -n 4p "$pidfile")"
    PG_SOCKET="$(sed -n 5p "$pidfile")"
    bindir="$(dirname "$(readlink -f "/proc/$PG_PID/exe" 2>/dev/null || echo /nonexistent/postgres)")"
    PGBENCH="$bindir/pgbench"
    [ -x "$PGBENCH" ] || PGBENCH="$(command -v pgbench || true)"
    PSQL="$bindir/psql"
    [ -x "$PSQL" ] || PSQL="$(command -v psql || true)"
    [ -x "$PSQL" ] || { echo "psql not found beside $bindir/postgres nor on PATH" >&2; return 1; }
}

# config_value FILE KEY: the value of KEY in FILE, the output of `taler-otp config show`.
config_value() {
    awk -F' = ' -v key="$2" '$1 == key {print $2}' "$1"
}
