#!/usr/bin/env bash
# Autobahn|Testsuite's server cases against ws mode, through `kosoku` (a Rust runner of
# Autobahn's own case files; the original `wstest` needs Python 2). Loopback only; every
# process it starts is stopped on exit.
#
#   tests/autobahn/run.sh [CASES...]     # e.g. '9.*' or 3.2; default: the whole suite
#
# Environment: SOCKLOOP (binary, default target/release/sockloop), MAX_MESSAGE (default
# 16777216, what group 9 needs), OUT (report directory, default /tmp/sockloop-autobahn),
# KOSOKU_VENV (default /tmp/kvenv; created with `pip install kosoku==0.1.0` if missing).
# Prints the behaviours per group and every case that is not OK; exits 1 if a case of
# groups 1-7, 9 or 10 is FAILED, or NON-STRICT outside 6.4.3 and 6.4.4.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/autobahn
binary=${SOCKLOOP:-${CARGO_TARGET_DIR:-target}/release/sockloop}
out=${OUT:-/tmp/sockloop-autobahn}
venv=${KOSOKU_VENV:-/tmp/kvenv}

if [ ! -x "$venv/bin/kosoku" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kosoku==0.1.0
fi
# The build under test is this checkout's, unless SOCKLOOP names another.
[ -n "${SOCKLOOP:-}" ] || cargo build --release --quiet

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
rm -rf "$out" && mkdir -p "$out"

# sockloop on a port of the kernel's choosing; its first line names it.
"$binary" --mode ws --addr 127.0.0.1:0 --max-message "${MAX_MESSAGE:-16777216}" \
    2>"$out/sockloop.log" &
pids+=($!)
for _ in $(seq 50); do
    grep -q "listening on" "$out/sockloop.log" 2>/dev/null && break
    sleep 0.1
done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out/sockloop.log" | head -1)
[ -n "$port" ] || { echo "sockloop did not start:"; cat "$out/sockloop.log"; exit 1; }

# sockloop greets every client with a text frame, which a conformance client takes for an
# unexpected message: this proxy drops that first frame and forwards the rest as is.
python3 -u "$here/greeting_skip_proxy.py" 0 "$port" >"$out/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    grep -q "proxy listening" "$out/proxy.log" 2>/dev/null && break
    sleep 0.1
done
proxy=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$out/proxy.log")
[ -n "$proxy" ] || { echo "the proxy did not start:"; cat "$out/proxy.log"; exit 1; }

include=()
for case in "$@"; do include+=(-i "$case"); done
# One case at a time (-p 1): a text message goes to every client of the room, so with one
# client the broadcast is the echo Autobahn expects. kosoku exits 1 when a case fails; the
# verdict below is ours.
"$venv/bin/kosoku" -o "$out/reports" "${include[@]}" "$proxy" >"$out/kosoku.log" 2>&1 || true

python3 "$here/summary.py" "$out/reports/index.json"
