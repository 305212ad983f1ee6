#!/usr/bin/env bash
# Real GNU Taler client libraries against taler-otp: the PHP SDK (mirrorps/taler-php) logs in
# with an instance password through its Factory and lists OTP devices over TLS; the
# taler-python SDK's MerchantClient validates /config. See contrib/clients/ for the drivers.
#
#   contrib/clients-test.sh
#
# It installs what it needs (Debian: PHP, Guzzle, PSR packages, socat, openssl; PyPI: pydantic
# and httpx in a venv under target/), builds the debug binary, runs `taler-otp serve` on a
# temporary embedded PostgreSQL on 127.0.0.1, puts a TLS terminator (socat, self-signed
# certificate) in front of it, runs the tests and stops everything it started. It ends with the
# line "N passed, M failed" and exits non-zero when anything failed.
#
# The SDK sources are read from ../shared/clients beside the repository (override with
# TALER_CLIENTS=DIR); TALER_OTP_BIN=PATH skips the build and uses that binary;
# KEEP_WORK=1 keeps the temporary folder (server log, test logs) for inspection.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=contrib/lib/serve.sh
. "$ROOT/contrib/lib/serve.sh"
cd "$ROOT"
HERE="$ROOT/contrib/clients"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'clients-test: %s\n' "$*" >&2; exit 1; }

CLIENTS="${TALER_CLIENTS:-$ROOT/../shared/clients}"
[ -f "$CLIENTS/php-bootstrap.php" ] && [ -d "$CLIENTS/taler-php/src" ] && [ -d "$CLIENTS/taler-python/src" ] ||
    die "the client library snapshots are missing: expected $CLIENTS (php-bootstrap.php, taler-php/, taler-python/, league-uri*/, psr-http-message/, php-shims/) -- the copy of shared/ beside the repository, or set TALER_CLIENTS"
CLIENTS="$(cd "$CLIENTS" && pwd)"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi
}

# --- Debian packages -------------------------------------------------------------------------------
DEBS=(php-cli php-curl php-mbstring php-guzzlehttp-guzzle php-guzzlehttp-psr7 php-guzzlehttp-promises
      php-psr-http-client php-psr-http-message php-psr-http-factory php-psr-log php-psr-simple-cache
      socat openssl curl)
MISSING=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$pkg")
done
APT_UPDATED=""
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=yes
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
        die "apt-get install $* failed"
}
if [ ${#MISSING[@]} -gt 0 ]; then
    log "installing Debian packages: ${MISSING[*]}"
    apt_install "${MISSING[@]}"
fi

# --- Python: pydantic >= 2 and httpx in a venv under target/ ---------------------------------------
VENV="${CARGO_TARGET_DIR:-$ROOT/target}/clients-venv"
venv_ok() {
    "$VENV/bin/python" -c 'import sys, pydantic, httpx; assert sys.version_info >= (3, 11); assert int(pydantic.VERSION.split(".")[0]) >= 2' 2>/dev/null
}
if ! venv_ok; then
    PY=""
    for candidate in python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            PY="$candidate"; break
        fi
    done
    [ -n "$PY" ] || { apt_install python3; PY=/usr/bin/python3; }
    log "creating $VENV ($("$PY" --version 2>&1)) with pydantic>=2 and httpx from PyPI"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        apt_install python3-venv
        rm -rf "$VENV"
        /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'pydantic>=2' httpx >&2 ||
        die "pip install pydantic httpx failed"
    venv_ok || die "the venv at $VENV lacks pydantic>=2 or httpx"
fi
PYTHON="$VENV/bin/python"

# --- the server binary -----------------------------------------------------------------------------
if [ -n "${TALER_OTP_BIN:-}" ]; then
    BIN="$TALER_OTP_BIN"
else
    log "building (cargo build --bin taler-otp)"
    cargo build --bin taler-otp >&2
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/taler-otp"
fi
[ -x "$BIN" ] || die "no binary at $BIN"

# --- a temporary embedded database, the server, the TLS terminator ---------------------------------
WORK="$(mktemp -d /tmp/taler-otp-clients.XXXXXX)"
chmod 755 "$WORK"   # as root the embedded cluster runs as `postgres`, which must reach $WORK/data
SERVER_PID=""
TLS_PID=""

cleanup() {
    local status=$?
    set +e
    if [ -n "$TLS_PID" ] && kill -0 "$TLS_PID" 2>/dev/null; then
        kill -TERM "$TLS_PID"
        for _ in $(seq 1 50); do kill -0 "$TLS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$TLS_PID" 2>/dev/null && kill -KILL "$TLS_PID"
    fi
    stop_serve "$SERVER_PID" "$WORK"
    if [ -n "${KEEP_WORK:-}" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PORT="$(free_port)"
URL="http://127.0.0.1:$PORT"
CONF="$WORK/taler-otp.conf"
cat >"$CONF" <<CONF
[merchant]
SERVE = tcp
PORT = $PORT
BIND_TO = 127.0.0.1
[taler]
CURRENCY = KUDOS
[otp]
DEFAULT_INSTANCE = admin
DATA_DIR = $WORK/data
CONF
# Only the file configures this run.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TALER_OTP_' || true)
export RUST_LOG="${RUST_LOG:-warn}"

log "starting taler-otp serve (embedded PostgreSQL under $WORK/data, port $PORT)"
"$BIN" -c "$CONF" serve >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
up=""
for _ in $(seq 1 1200); do   # 120 s: a first start runs initdb
    if curl -fsS --max-time 2 "$URL/config" >/dev/null 2>&1; then up=yes; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited"; }
    sleep 0.1
done
[ -n "$up" ] || { tail -n 30 "$WORK/server.log" >&2; die "the server did not answer /config within 120 s"; }

INSTANCE=admin
PASSWORD="clients-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
DEVICE_ID="clients-test-device"
"$BIN" -c "$CONF" device add --instance "$INSTANCE" --id "$DEVICE_ID" \
    --key JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP --algorithm TOTP_WITHOUT_PRICE \
    --description "registered by contrib/clients-test.sh" >/dev/null ||
    die "taler-otp device add failed"
TOKEN="$("$BIN" -c "$CONF" token create --instance "$INSTANCE" --scope readonly --description clients-test)" ||
    die "taler-otp token create failed"

log "starting the TLS terminator"
bash "$HERE/tls-terminator.sh" cert "$WORK/tls"
CA="$WORK/tls/cert.pem"
TLS_PORT="$(free_port)"
bash "$HERE/tls-terminator.sh" run "$WORK/tls" "$TLS_PORT" "$PORT" 2>"$WORK/tls.log" &
TLS_PID=$!
TLS_URL="https://127.0.0.1:$TLS_PORT"
up=""
for _ in $(seq 1 100); do   # 10 s
    if curl -fsS --max-time 2 --cacert "$CA" "$TLS_URL/config" >/dev/null 2>&1; then up=yes; break; fi
    kill -0 "$TLS_PID" 2>/dev/null || { cat "$WORK/tls.log" >&2; die "the TLS terminator exited"; }
    sleep 0.1
done
[ -n "$up" ] || { cat "$WORK/tls.log" >&2; die "the TLS terminator did not answer within 10 s"; }

# --- the tests -------------------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()

# check NAME COMMAND...: runs COMMAND (each bounds itself in time), its output into $WORK/NAME.log.
check() {
    local name="$1"; shift
    local out="$WORK/$name.log"
    if "$@" >"$out" 2>&1; then
        PASSED=$((PASSED + 1))
        printf 'ok   %s: %s\n' "$name" "$(tail -n1 "$out")"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        printf 'FAIL %s\n' "$name"
        sed 's/^/     | /' "$out" | tail -n 20
    fi
}

set_password() {
    printf '%s\n' "$PASSWORD" | timeout 60 "$BIN" -c "$CONF" instance set-password "$INSTANCE"
}

php_sdk() {
    timeout 120 env TALER_CLIENTS="$CLIENTS" TALER_BASE_URL="$TLS_URL/" TALER_CA_FILE="$CA" \
        TALER_INSTANCE="$INSTANCE" TALER_PASSWORD="$PASSWORD" TALER_TOKEN="$TOKEN" \
        TALER_DEVICE_ID="$DEVICE_ID" php "$HERE/php-sdk.php" "$@"
}

python_sdk() {
    timeout 120 env SSL_CERT_FILE="$CA" "$PYTHON" "$HERE/python-sdk.py" "$CLIENTS/taler-python/src" "$@"
}

check python-config python_sdk "$URL"
check python-config-instance-tls python_sdk "$TLS_URL/instances/$INSTANCE"
check php-token-list php_sdk token-list
check cli-set-password set_password
check php-login-list php_sdk login-list
check php-wrong-password php_sdk wrong-password
check php-login-tokens php_sdk login-tokens
check php-update-auth php_sdk update-auth

kill -0 "$SERVER_PID" 2>/dev/null || { FAILED=$((FAILED + 1)); FAILED_NAMES+=("server-alive"); echo "FAIL server-alive: the server died"; }
if [ "$FAILED" -gt 0 ]; then
    echo "failed: ${FAILED_NAMES[*]} (server log: last lines below)"
    tail -n 15 "$WORK/server.log" | sed 's/^/     | /'
fi
echo "clients: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
