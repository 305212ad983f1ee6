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
