#!/usr/bin/env bash
# A TLS terminator for tests on 127.0.0.1: the PHP SDK accepts only https:// base URLs,
# and taler-otp serves plain HTTP (production puts a reverse proxy in front).
#
#   tls-terminator.sh cert DIR                       makes DIR/cert.pem and DIR/key.pem
#                                                    (self-signed, CN and SAN 127.0.0.1, 2 days)
#   tls-terminator.sh run DIR LISTEN_PORT HTTP_PORT  replaces itself with socat: TLS on
#                                                    127.0.0.1:LISTEN_PORT to 127.0.0.1:HTTP_PORT
#
# Needs openssl and socat (Debian packages of the same names). The process id of `run` is
# socat's own, so the caller stops it with kill on that id.
set -euo pipefail

die() { printf 'tls-terminator: %s\n' "$*" >&2; exit 2; }

case "${1:-}" in
    cert)
        [ $# -eq 2 ] || die "usage: $0 cert DIR"
        dir="$2"
        mkdir -p "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -sha256 \
            -subj "/CN=127.0.0.1" \
            -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 ||
            die "openssl could not make a certificate in $dir"
        chmod 600 "$dir/key.pem"
        ;;
    run)
        [ $# -eq 4 ] || die "usage: $0 run DIR LISTEN_PORT HTTP_PORT"
        dir="$2" listen="$3" target="$4"
        [ -f "$dir/cert.pem" ] && [ -f "$dir/key.pem" ] || die "no cert.pem/key.pem in $dir (run: $0 cert $dir)"
        command -v socat >/dev/null || die "socat is not installed"
        exec socat -d "OPENSSL-LISTEN:$listen,bind=127.0.0.1,reuseaddr,fork,cert=$dir/cert.pem,key=$dir/key.pem,verify=0" \
            "TCP:127.0.0.1:$target"
        ;;
    *)
        die "usage: $0 cert DIR | run DIR LISTEN_PORT HTTP_PORT"
        ;;
esac
