#!/usr/bin/env bash
# Fuzzes the running API against openapi/openapi.json with schemathesis (from PyPI):
# no 5xx, documented status codes and content types, responses matching their schemas.
#   contrib/api-fuzz.sh [MAX_EXAMPLES]      (default 200 per operation)
# It starts `taler-otp serve` on a temporary embedded database and port 9977, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-200}
command -v schemathesis >/dev/null || python3 -m pip install -q schemathesis
cargo build -q --release --bin taler-otp
bin=$PWD/target/release/taler-otp
work=$(mktemp -d /tmp/taler-otp-fuzz.XXXXXX)
chmod 755 "$work"
export TALER_OTP_OTP__DATA_DIR=$work/data TALER_OTP_MERCHANT__PORT=9977 RUST_LOG=warn
"$bin" serve >"$work/serve.out" 2>"$work/serve.err" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:9977/config >/dev/null && break; sleep 0.2; done
token=$("$bin" token create --scope write --description api-fuzz)
"$bin" device add --id till-1 --key GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ --algorithm HOTP_WITH_PRICE >/dev/null
cat >"$work/schemathesis.toml" <<'TOML'
[parameters]
"path.device_id" = "till-1"
"path.instance" = "admin"
TOML
cd "$work"
schemathesis run "$OLDPWD/openapi/openapi.json" --url http://127.0.0.1:9977 \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples"
