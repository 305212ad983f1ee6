#!/usr/bin/env bash
# Screenshots of a page (normally the operator page, http://127.0.0.1:9966/webui/) with
# headless Chromium, at a desktop and a phone width.
#
#   contrib/webui-shot.sh [URL] [OUTDIR]
#
# URL defaults to http://127.0.0.1:9966/webui/, OUTDIR to target/webui-shots. Writes
# OUTDIR/desktop.png (1280x900) and OUTDIR/phone.png (390x844). Needs `chromium` (Debian:
# apt-get install chromium); CHROMIUM overrides the binary. A fresh, throw-away profile is used
# for each shot, and Chromium's background traffic (updates, sync, QUIC) is switched off.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
URL="${1:-http://127.0.0.1:9966/webui/}"
OUTDIR="${2:-$ROOT/target/webui-shots}"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"

if [[ -z "$CHROMIUM" ]]; then
  echo "webui-shot: no chromium found (apt-get install chromium, or set CHROMIUM)" >&2
  exit 1
fi
mkdir -p "$OUTDIR"

PROFILES=()
cleanup() {
  for dir in "${PROFILES[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

shot() {
  local name="$1" size="$2" profile
  profile="$(mktemp -d)"
  PROFILES+=("$profile")
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="$size" \
    --screenshot="$OUTDIR/$name.png" "$URL" >/dev/null 2>&1
  echo "$OUTDIR/$name.png ($size)"
}

shot desktop 1280,900
shot phone 390,844
