#!/usr/bin/env bash
# Soak: wrk at full load on http mode while a chaos client misbehaves beside it, then check
# that wrk saw no errors and the server's memory came back to where it started.
# Loopback only; stops by itself after about SECONDS + 20 s.
#   SECONDS_UNDER_LOAD=60 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD_SECONDS=${SECONDS_UNDER_LOAD:-60}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sockloop --example chaos
release=${CARGO_TARGET_DIR:-target}/release

tmp=$(mktemp -d)
cleanup() { [ -n "${server:-}" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

"$release/sockloop" --mode http --addr 127.0.0.1:0 2>"$tmp/server.log" &
server=$!
for _ in $(seq 50); do grep -q "listening on" "$tmp/server.log" && break; sleep 0.1; done
addr=$(grep -o 'listening on [^ ]*' "$tmp/server.log" | awk '{print $3}')
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }

echo "== warm-up: wrk -t1 -c100 -d5s"
wrk -t1 -c100 -d5s "http://$addr/" | grep -E "Requests/sec|errors" || true
sleep 1
rss_start=$(rss)
echo "RSS at start: ${rss_start} KiB"

echo "== ${LOAD_SECONDS}s of wrk -t1 -c100 with chaos beside it"
"$release/examples/chaos" --addr "$addr" --seconds "$LOAD_SECONDS" --threads 8 >"$tmp/chaos.out" &
chaos=$!
wrk -t1 -c100 -d"${LOAD_SECONDS}s" --timeout 5s "http://$addr/" | tee "$tmp/wrk.out"
wait "$chaos"
cat "$tmp/chaos.out"
rss_during=$(rss)
sleep 3 # lingering closes and stalls finish
rss_end=$(rss)
echo "RSS at start ${rss_start} KiB, right after ${rss_during} KiB, 3 s later ${rss_end} KiB"

errors=$(grep -c "Socket errors\|Non-2xx" "$tmp/wrk.out" || true)
pct=$(awk -v a="$rss_end" -v b="$rss_start" 'BEGIN { printf "%.1f", (a - b) * 100 / b }')
echo "wrk error lines: $errors; RSS change: ${pct}%"
kill -INT "$server"; wait "$server" || true; server=
grep "totals" "$tmp/server.log" || true
if [ "$errors" -eq 0 ] && awk -v p="$pct" 'BEGIN { exit !(p <= 10) }'; then
    echo "SOAK PASS"
else
    echo "SOAK FAIL"; exit 1
fi
