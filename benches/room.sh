#!/usr/bin/env bash
# The chat room's memory under a flood (issue 12): for each build, a ws server, 1,000
# clients that never read, one client sending 1 MiB texts as fast as it hears them back,
# and two that chat through it all (examples/room_flood.rs). The server's RSS every half
# second, into one TSV per build, and a summary line each. Loopback only; each run stops by
# itself after DURATION seconds (25).
#
#   benches/room.sh                                  # this build (target/release)
#   BUILDS="/work/bin/sockloop-4960f47 target/release/sockloop" benches/room.sh
#   JOIN=during STALLED=1000 DURATION=25 OUT=/tmp/room benches/room.sh
#
# JOIN=before (the default): every stalled client joins before the flood. JOIN=during: they
# join one by one over its first half, so that each stops at a different message: that is
# what the room's bound (--room-bytes) is for. WINDOW: the sender's messages in flight
# (1 by default: the build before issue 12 closes every reader, the sender too, when two
# 1 MiB messages arrive in one round). EXTRA: more flags for every server, e.g.
# EXTRA="--room-bytes 33554432" (only builds that know them).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
builds=${BUILDS:-${CARGO_TARGET_DIR:-$here/target}/release/sockloop}
stalled=${STALLED:-1000}
seconds=${DURATION:-25}
join=${JOIN:-before}
window=${WINDOW:-1}
extra=${EXTRA:-}
out=${OUT:-$(mktemp -d)}
flood=${FLOOD:-${CARGO_TARGET_DIR:-$here/target}/release/examples/room_flood}
port=${PORT:-13100}
mkdir -p "$out"

# A thousand client sockets here and a thousand in the server: more than the usual soft
# limit of 1024 descriptors. The server inherits this shell's limit.
ulimit -n "$(ulimit -Hn)"

for bin in $builds; do
    name=$(basename "$bin")
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    RUST_LOG=warn "$bin" --mode ws --addr "127.0.0.1:$port" $extra 2>"$out/$name.server.log" &
    server=$!
    sleep 0.5
    status=0
    "$flood" --addr "127.0.0.1:$port" --server-pid "$server" --stalled "$stalled" \
        --seconds "$seconds" --join "$join" --window "$window" \
        >"$out/$name.tsv" 2>"$out/$name.flood.log" || status=$?
    kill -INT "$server"
    wait "$server" || true
    echo "$name (exit $status): $(grep RESULT "$out/$name.tsv" | cut -d' ' -f2-)"
    port=$((port + 1))
done
echo "samples and logs in $out"
