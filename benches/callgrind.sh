#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a figure that does not move with the host's
# load, for telling whether a change slowed the hot paths down. The server runs under
# `valgrind --tool=callgrind` while a client loads it for DURATION seconds; then SIGINT, and
# the server's exit line says how many requests (or echo messages) it served. Ir, every
# instruction the server's threads executed (start-up and shutdown included, a constant that
# a long enough run makes small), divided by that count, is the figure.
#
#   benches/callgrind.sh target/release/sockloop                       # all three paths
#   ONLY=pipeline benches/callgrind.sh /work/bin/sockloop-room-base    # one of them
#
# The paths: `pipeline` (wrk -t1 -c50, benches/pipeline.lua, 16 requests per write),
# `keepalive` (wrk -t1 -c50, one request per write), `echo` (examples/echo_load, 50
# connections, 64-byte messages). Loopback only; each run stops by itself.
set -euo pipefail

bin=${1:?usage: benches/callgrind.sh PATH-TO-SOCKLOOP}
duration=${DURATION:-5}
only=${ONLY:-pipeline keepalive echo}
here=$(cd "$(dirname "$0")/.." && pwd)
echo_load=${ECHO_LOAD:-${CARGO_TARGET_DIR:-$here/target}/release/examples/echo_load}
tmp=$(mktemp -d)
server=
# Whatever happens, leave no server behind.
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT

# Start the server under callgrind; wait for its start-up line.
start() {
    local mode=$1 port=$2
    # The last run's log says "listening on" too: it must not be read for this one's.
    rm -f "$tmp/server.log"
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
        "$bin" --mode "$mode" --addr "127.0.0.1:$port" >"$tmp/server.out" 2>"$tmp/server.log" &
    server=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$tmp/server.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$tmp/server.log" >&2
    exit 1
}

# SIGINT, wait for the exit line, and print Ir / count of the given totals field.
stop_and_report() {
    local path=$1 field=$2
    kill -INT "$server"
    wait "$server" || true
    server=
    local count ir
    count=$(grep -o "totals: .*" "$tmp/server.log" | grep -o "$field=[0-9]*" | cut -d= -f2)
    ir=$(grep -E "^(summary|totals):" "$tmp/cg.out" | head -1 | awk '{print $2}')
    if [ -z "$count" ] || [ "$count" = 0 ] || [ -z "$ir" ]; then
        echo "$path: no count ($field) or no Ir in the output" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    awk -v p="$path" -v ir="$ir" -v n="$count" -v f="$field" \
        'BEGIN { printf "%-10s Ir=%d %s=%d Ir/%s=%.1f\n", p, ir, f, n, f, ir / n }'
    rm -f "$tmp/cg.out"
}

for path in $only; do
    case $path in
    pipeline | keepalive)
        start http 18889
        script=()
        [ "$path" = pipeline ] && script=(-s "$here/benches/pipeline.lua")
        wrk -t1 -c50 -d"${duration}s" "${script[@]}" http://127.0.0.1:18889/ >"$tmp/wrk.out"
        stop_and_report "$path" requests
        ;;
    echo)
        start echo 18888
        "$echo_load" --addr 127.0.0.1:18888 --conns 50 --size 64 --duration "$duration" \
            >"$tmp/load.out"
        stop_and_report echo messages
        ;;
    *)
        echo "unknown path $path (pipeline, keepalive, echo)" >&2
        exit 1
        ;;
    esac
done
