#!/usr/bin/env bash
# The browser test: two headless Chromium tabs chat through `sockloop --mode ws`.
# Needs Debian's chromium (/usr/bin/chromium) and Node.js 20 with npm; playwright-core comes
# from the npm registry, and no browser is downloaded. Builds the release binary unless
# SOCKLOOP_BIN names one. The screenshot goes to $CHAT_SCREENSHOT (default /tmp/chat.png).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ -z "${SOCKLOOP_BIN:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    # Absolute, before the cd below: cargo reads a relative CARGO_TARGET_DIR from here.
    SOCKLOOP_BIN="$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")/release/sockloop"
    export SOCKLOOP_BIN
fi

cd "$here"
# Exactly the versions in package-lock.json.
npm ci --no-audit --no-fund --loglevel=error
timeout 120 node chat.mjs
