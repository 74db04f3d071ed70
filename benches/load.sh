#!/usr/bin/env bash
# sockloop against nginx and against the floor, side by side, on this machine's loopback.
#
#   benches/load.sh                                  # ROUNDS=3 DURATION=10: about sixteen
#                                                    # minutes, twenty-two with BASELINE
#   ROUNDS=1 DURATION=3 benches/load.sh              # a quick look
#   ONLY=http,echo ROUNDS=1 DURATION=3 benches/load.sh       # some sections only
#   BASELINE=/path/to/old/sockloop benches/load.sh   # this build against another, e.g. before
#                                                    # and after a refactor
#
# What it does, in order:
#  1. installs wrk, nginx and gnuplot from Debian if they are missing, builds sockloop
#     (release) and the floor (benches/floor/floor.c, cc -O2, into a temporary directory);
#  2. [http] one loop against one nginx worker and the floor, each server pinned to CPU 0
#     and wrk to CPU 1, interleaved rounds (each server goes first in turn) of
#       wrk -t1 -c50 (plain keep-alive), wrk -t1 -c50 with a 16-deep pipeline,
#       wrk -t1 -c10000 (C10K);
#  3. [threads] sockloop --threads 2 against nginx with 2 workers, nothing pinned,
#     wrk -t2 -c50, plain and pipelined (no floor: it is one thread);
#  4. [idle] RSS per idle connection with 5,000 connections held open;
#  5. [echo] echo mode, the default and --splice side by side with the floor:
#     examples/echo_load at 64 B x 50 connections and 64 KiB x 10 connections, the latter
#     also with a client that does not copy (--zero-copy);
#  6. [offsets] the floor's echo alone, 64 KiB x 10 with both clients, with its read buffer
#     at several offsets into a page (FLOOR_OFFSETS): where a buffer sits in its page can
#     change what the kernel's copies to and from it cost (issue 13 saw 2x at offset 16);
#  7. medians per server and scenario, the ratios sockloop/nginx and sockloop/floor (and
#     sockloop/baseline), the targets of issue 6 with PASS or MISS, and an SVG chart.
#
# The floor (benches/floor/floor.c) is the least a server can do on one epoll thread: echo
# reads and writes back, http counts request heads and answers each with a canned response
# as long as sockloop's, in one write per read. sockloop's CPU per request divided by the
# floor's, both measured in the same rounds, says how much sockloop adds to the least any
# server on epoll must pay for the same traffic: 1.0 would be nothing at all.
#
# With BASELINE set to another sockloop binary, that build runs as one more server in the
# http, threads, idle and echo sections (default and --splice), right after sockloop in most
# rounds, and the summary divides this build's CPU per request and per message by the
# baseline's. A change meant to leave performance alone should keep every ratio within 5%
# of 1; how close noise alone lets them come shows when BASELINE is this very build.
#
# Why CPU time per request: with one core for wrk, wrk itself is often the bottleneck, and
# two servers that both keep up with it post the same req/s. The CPU time a server spent
# per request tells them apart. It is the delta, over a run, of the sum of the first field
# of /proc/PID/task/*/schedstat (ns on a CPU) over the server's threads (for nginx: master
# and workers), divided by the requests wrk completed. It includes kernel time; on loopback
# that includes TCP receive processing for the peer, which runs in the sender's context.
#
# nginx is configured to be as fast as it realistically gets for this page: 1 worker,
# access_log off, a huge keepalive_requests, and `return 200 "<body>"`, which answers from
# memory with one writev(2) per response. A static file would cost more: with sendfile,
# writev(headers) + sendfile(body) per response; without, a pread(2) of the file each time
# even with open_file_cache (which caches the descriptor, not the bytes).
#
# Environment: ROUNDS (3), DURATION seconds per run (10), IDLE_CONNS (5000),
# SERVER_CPU (0), CLIENT_CPU (1), BENCH_NICE (-10: see "Sharing the machine" below),
# ONLY (http,threads,idle,echo,offsets: the sections to run, comma-separated),
# BASELINE (unset: a second sockloop binary to compare with), FLOOR_OFFSETS ("0 16 2048"),
# LOG_DIR (unset: where to keep wrk's and echo_load's raw output, the results tables and the
# chart, load.svg). Without LOG_DIR the chart goes to target/load/load-<UTC time>.svg.
# Exits non-zero only when it cannot set up (install, build, start a server); a run that
# fails is reported as such and the script goes on.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
IDLE_CONNS=${IDLE_CONNS:-5000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_NICE=${BENCH_NICE:--10}
ONLY=${ONLY:-http,threads,idle,echo,offsets}
BASELINE=${BASELINE:-}
FLOOR_OFFSETS=${FLOOR_OFFSETS:-0 16 2048}
PIPELINE_DEPTH=16
C10K_CONNS=10000
BODY=$'<html>\r\n<body>\r\n<h1>Hello, World!</h1>\r\n</body>\r\n</html>\r\n'
CONTENT_TYPE='text/html; charset=utf-8'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ----- Sharing the machine -----
# The kernel groups processes by session (sched autogroup, sched(7)) and shares the CPU
# fairly between the groups, whatever their nice values. On a machine where others compile
# at the same time, our server and wrk would get a quarter of a core each. So the benchmark
# runs in a session of its own, and that session's group gets a higher weight
# (/proc/self/autogroup). Signals to this outer process are passed on to it.
if [[ ${LOAD_SH_INNER:-} != 1 && $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0) == 1 ]] &&
    command -v setsid >/dev/null; then
    LOAD_SH_INNER=1 setsid bash "$0" "$@" &
    inner=$!
    trap 'kill -TERM "$inner" 2>/dev/null || true' INT TERM HUP
    status=0
    while true; do
        wait "$inner" && status=0 || status=$?
        # wait returns early (above 128) when a trapped signal arrives; wait again.
        kill -0 "$inner" 2>/dev/null || break
    done
    exit "$status"
fi
if [[ -w /proc/self/autogroup ]]; then
    echo "$BENCH_NICE" >/proc/self/autogroup 2>/dev/null || true
fi
renice -n "$BENCH_NICE" -p $$ >/dev/null 2>&1 || true

say() { printf '%s\n' "$*"; }
fail() {
    say "load.sh: $*" >&2
    exit 1
}

# The sections ONLY names; wants SECTION says whether to run it.
for section in ${ONLY//,/ }; do
    case $section in
    http | threads | idle | echo | offsets) ;;
    *) fail "ONLY: unknown section '$section' (known: http,threads,idle,echo,offsets)" ;;
    esac
done
wants() { [[ ,$ONLY, == *,$1,* ]]; }
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE && ! -d $BASELINE ]] || fail "BASELINE=$BASELINE is not an executable file"
    BASELINE=$(realpath "$BASELINE")
fi
for offset in $FLOOR_OFFSETS; do
    [[ $offset =~ ^[0-9]+$ ]] || fail "FLOOR_OFFSETS: '$offset' is not a number of bytes"
done

# ----- Everything we start, stopped on the way out -----
TMP=$(mktemp -d /tmp/sockloop-load.XXXXXX)
STARTED=()
POLICY_RC_CREATED=0
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.5
    for pid in "${STARTED[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -n ${LOG_DIR:-} ]]; then
        { mkdir -p "$LOG_DIR" && cp "$TMP"/*.txt "$TMP"/*.tsv "$LOG_DIR"/; } 2>/dev/null || true
    fi
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ----- Setup -----
install_missing() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
    command -v cc >/dev/null || missing+=(gcc)
    [[ ${#missing[@]} == 0 ]] && return 0
    say "installing ${missing[*]} (apt-get)"
    # Installing Debian's nginx would start the system nginx on port 80; policy-rc.d
    # answering 101 ("action forbidden") stops invoke-rc.d from doing so.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    apt-get update -qq || fail "apt-get update failed"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; then
        # nginx-light is gone from newer Debian releases; plain nginx is the same server.
        missing=("${missing[@]/nginx-light/nginx}")
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" ||
            fail "apt-get install ${missing[*]} failed"
    fi
}
install_missing
command -v cargo >/dev/null || fail "cargo not found"

say "building sockloop (release)"
(cd "$ROOT" && cargo build --release --quiet --bin sockloop --example echo_load --example hold_conns) ||
    fail "cargo build failed"
# cargo ran in $ROOT, so a relative CARGO_TARGET_DIR is relative to $ROOT.
TARGET=$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/release
SOCKLOOP=$TARGET/sockloop
ECHO_LOAD=$TARGET/examples/echo_load
HOLD_CONNS=$TARGET/examples/hold_conns

# The floor: built here from its one C file, each run, so no binary is ever committed.
say "building the floor (cc -O2 benches/floor/floor.c)"
FLOOR=$TMP/floor
cc -O2 -Wall -Wextra -o "$FLOOR" "$ROOT/benches/floor/floor.c" || fail "cc failed on benches/floor/floor.c"

# Descriptors: wrk -c10000 needs 10,000 and the server as many. Take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
((NOFILE >= C10K_CONNS + 100)) || fail "need ${C10K_CONNS}+ descriptors, the hard limit is $NOFILE"
NGINX_NOFILE=$((NOFILE < 30000 ? NOFILE : 30000))

# ----- Helpers -----

# A TCP port nobody on this machine uses, below the ephemeral range (32768+) so that no
# client connection can be holding it.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((10000 + RANDOM % 20000))
        if command -v ss >/dev/null; then
            [[ -z $(ss -Htan "( sport = :$port )" 2>/dev/null) ]] && echo "$port" && return 0
        elif ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port" && return 0
        fi
    done
    fail "no free port found"
}

wait_for_port() { # port pid
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Nanoseconds on a CPU, summed over every thread of the given processes.
cpu_ns() {
    local total=0 pid file ns rest
    for pid in "$@"; do
        for file in /proc/"$pid"/task/*/schedstat; do
            { read -r ns rest <"$file"; } 2>/dev/null || continue
            total=$((total + ns))
        done
    done
    echo "$total"
}

# Busy time of one CPU in USER_HZ ticks (100 a second): user nice system irq softirq
# steal from /proc/stat, whoever ran there. Shows when something else competed for it.
cpu_busy_jiffies() {
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# Steal time of every CPU, in ticks: time this VM's vCPUs were ready to run but the host
# ran something else. A round with steal was disturbed from outside the machine.
steal_jiffies() {
    awk '$1 == "cpu" { print $9 }' /proc/stat
}

# The `times` builtin's second line is the CPU time (user, system) of this shell's reaped
# children. Written to a file before and after a wrk run (by the main shell itself: in a
# $(...) subshell it would report the subshell's children), the difference is wrk's.
# children_cpu_cs FILE: that line in hundredths of a second.
children_cpu_cs() {
    tail -1 "$1" | awk '{
        total = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); total += p[1] * 60 + p[2] }
        printf "%d\n", total * 100 }'
}

rss_kib() { # pid: resident set in KiB
    if [[ -r /proc/$1/smaps_rollup ]]; then
        awk '/^Rss:/ { print $2 }' "/proc/$1/smaps_rollup"
    else
        awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
    fi
}

fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

children_of() {
    cat "/proc/$1/task/$1/children" 2>/dev/null || pgrep -P "$1" 2>/dev/null || true
}

# Sets PIN to the command prefix that pins to the given CPUs (none for ""). A prefix and
# not a wrapper function: `"${PIN[@]}" cmd &` makes $! the command's own pid (taskset
# execs it), which is the pid whose CPU time we read and which we stop.
pinned() {
    PIN=()
    if [[ -n $1 ]]; then PIN=(taskset -c "$1"); fi
}

# Drop pids from STARTED once they are reaped, so that the exit trap never signals a pid
# that has since been given to someone else.
forget() {
    local keep=() pid gone
    for pid in "${STARTED[@]}"; do
        for gone in "$@"; do [[ $pid == "$gone" ]] && continue 2; done
        keep+=("$pid")
    done
    STARTED=("${keep[@]}")
}

SERVER_PIDS=() # every process whose CPU time counts for the running server
SERVER_MAIN=   # the process whose RSS counts: sockloop, or nginx's (first) worker

start_sockloop() { # binary cpus port extra-args... (binary: $SOCKLOOP or $BASELINE)
    local binary=$1 cpus=$2 port=$3
    shift 3
    pinned "$cpus"
    "${PIN[@]}" "$binary" --addr "127.0.0.1:$port" "$@" 2>>"$TMP/sockloop.log" &
    local pid=$!
    STARTED+=("$pid")
    wait_for_port "$port" "$pid" || fail "$binary did not start: $(tail -3 "$TMP/sockloop.log")"
    SERVER_PIDS=("$pid")
    SERVER_MAIN=$pid
}

# The floor listens on port 0, so no port has to be guessed free: the kernel picks one, and
# the floor's start-up line ("floor: listening on 127.0.0.1:PORT ...") says which. Sets
# FLOOR_PORT.
FLOOR_STARTS=0
start_floor() { # cpus extra-args...
    local cpus=$1 out
    shift
    FLOOR_STARTS=$((FLOOR_STARTS + 1))
    out=$TMP/floor-$FLOOR_STARTS.log
    pinned "$cpus"
    "${PIN[@]}" "$FLOOR" --addr 127.0.0.1:0 "$@" >"$out" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    FLOOR_PORT=
    for _ in $(seq 100); do
        FLOOR_PORT=$(sed -n 's/^floor: listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$out")
        [[ -n $FLOOR_PORT ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $FLOOR_PORT ]] || fail "the floor did not start: $(tail -3 "$out")"
    SERVER_PIDS=("$pid")
    SERVER_MAIN=$pid
}

# The servers of a section by name: their processes and port, kept when each is started
# (remember NAME PORT, after a start_*), and made current before each run (use NAME sets
# SERVER_PIDS, SERVER_MAIN and port).
declare -A SERVER_PIDS_OF SERVER_PORT_OF
remember() {
    SERVER_PIDS_OF[$1]="${SERVER_PIDS[*]}"
    SERVER_PORT_OF[$1]=$2
}
use() {
    read -ra SERVER_PIDS <<<"${SERVER_PIDS_OF[$1]}"
    SERVER_MAIN=${SERVER_PIDS[0]}
    port=${SERVER_PORT_OF[$1]}
}
stop_all() { # names...
    local name
    for name in "$@"; do
        use "$name"
        stop_server
    done
}

# The names in the order round N runs them: rotated by one each round, so that each server
# goes first in turn and none always runs right after the same other one: the host's load
# drifts within a round too.
in_turn() { # round names...
    local round=$1
    shift
    local names=("$@") i
    for ((i = 0; i < ${#names[@]}; i++)); do
        printf '%s\n' "${names[(round - 1 + i) % ${#names[@]}]}"
    done
}

# The nginx config: one file per worker count, generated here and never the system one.
write_nginx_conf() { # workers port -> path
    local workers=$1 port=$2 dir="$TMP/nginx-$1w-$2" reuseport="" temp_paths="" module
    mkdir -p "$dir"
    ((workers > 1)) && reuseport=" reuseport"
    # Temporary-file paths inside our directory, so nginx creates nothing under /var/lib.
    temp_paths="client_body_temp_path $dir/body;"
    for module in proxy fastcgi uwsgi scgi; do
        nginx -V 2>&1 | grep -q -- "--without-http_${module}_module" ||
            temp_paths+=$'\n    '"${module}_temp_path $dir/$module;"
    done
    # The body, escaped for an nginx string: nginx turns \r and \n back into CR and LF.
    local body=${BODY//$'\r'/\\r}
    body=${body//$'\n'/\\n}
    cat >"$dir/nginx.conf" <<EOF
# Generated by sockloop's benches/load.sh.
worker_processes $workers;
worker_rlimit_nofile $NGINX_NOFILE;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 20000;
    # Take every pending connection per wakeup; helps the C10K ramp-up.
    multi_accept on;
}

http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 65;
    $temp_paths

    server {
        # Same backlog as sockloop's default (--backlog 1024).
        listen 127.0.0.1:$port backlog=1024$reuseport;
        location / {
            # The whole response comes from memory: one writev(2) per response.
            default_type "$CONTENT_TYPE";
            return 200 "$body";
        }
    }
}
EOF
    echo "$dir/nginx.conf"
}

start_nginx() { # cpus workers port
    local cpus=$1 workers=$2 port=$3 conf
    conf=$(write_nginx_conf "$workers" "$port")
    local dir
    dir=$(dirname "$conf")
    pinned "$cpus"
    "${PIN[@]}" nginx -p "$dir" -c "$conf" -e "$dir/error.log" 2>>"$dir/stderr.log" &
    local master=$!
    STARTED+=("$master")
    wait_for_port "$port" "$master" ||
        fail "nginx did not start: $(tail -3 "$dir/error.log" "$dir/stderr.log" 2>/dev/null)"
    local workers_found=()
    for _ in $(seq 50); do
        mapfile -t workers_found < <(children_of "$master" | tr ' ' '\n' | grep . || true)
        ((${#workers_found[@]} >= workers)) && break
        sleep 0.1
    done
    ((${#workers_found[@]} >= workers)) || fail "nginx started ${#workers_found[@]} of $workers workers"
    STARTED+=("${workers_found[@]}")
    SERVER_PIDS=("$master" "${workers_found[@]}")
    SERVER_MAIN=${workers_found[0]}
}

stop_server() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait "${SERVER_PIDS[0]}" 2>/dev/null || true
    forget "${SERVER_PIDS[@]}"
    SERVER_PIDS=()
}

# One GET / with Connection: close, the raw response on stdout (headers and body). The floor
# does not read headers and never closes first: its fetch ends with the timeout.
fetch() { # port [timeout-seconds]
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout "${2:-2}" bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf "GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$1" >&3
        cat <&3' _ "$1" 2>/dev/null || true
}

# Check that a server answers 200 with exactly our body and Content-Type; show its head.
check_page() { # name port [timeout-seconds]
    local response head body
    response=$(fetch "$2" "${3:-2}"; echo x)
    response=${response%x}
    head=${response%%$'\r\n\r\n'*}
    body=${response#*$'\r\n\r\n'}
    say "  $1 answers ($(printf '%s' "$response" | wc -c) bytes with Connection: close):"
    printf '%s\n' "$head" | tr -d '\r' | sed 's/^/    | /'
    [[ $head == "HTTP/1.1 200"* ]] || fail "$1 did not answer 200"
    [[ $body == "$BODY" ]] || fail "$1 served a different body: $(printf '%q' "$body")"
    tr -d '\r' <<<"$head" | grep -qix "content-type: $CONTENT_TYPE" || fail "$1: wrong Content-Type"
}

# The floor's canned answer must cost the kernel what sockloop's does: the same bytes on the
# wire but for the values of Server and Date, which must be as long. Compared on a keep-alive
# GET (sockloop adds Connection: close to the other kind; the floor never does).
check_floor_shape() { # sockloop-port floor-port
    local get=$'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' sl fl
    # shellcheck disable=SC2016 # $1 and $2 are expanded by the inner bash
    sl=$(timeout 0.5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "%s" "$2" >&3; cat <&3' _ "$1" "$get" 2>/dev/null; echo x)
    # shellcheck disable=SC2016
    fl=$(timeout 0.5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "%s" "$2" >&3; cat <&3' _ "$2" "$get" 2>/dev/null; echo x)
    local masked_sl masked_fl
    masked_sl=$(sed -E 's/^(Server|Date): [^\r]*/\1: -/' <<<"$sl")
    masked_fl=$(sed -E 's/^(Server|Date): [^\r]*/\1: -/' <<<"$fl")
    if ((${#sl} != ${#fl})) || [[ $masked_sl != "$masked_fl" ]]; then
        fail "the floor's answer differs from sockloop's: $(printf '%q' "${fl%x}") against $(printf '%q' "${sl%x}")"
    fi
    say "  the floor's keep-alive answer: $((${#fl} - 1)) bytes, sockloop's $((${#sl} - 1)), alike but for Server's and Date's values"
}

# wrk's Lua hooks. `done` prints exact figures (wrk's own text rounds them). A script that
# defines no `request` or `response` function keeps wrk on its static-request fast path, so
# the plain runs cost wrk nothing extra.
cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(99)))
end
EOF
# The pipelined runs: benches/pipeline.lua (TechEmpower's: `init` builds DEPTH requests into
# one string, `request` sends it whole) with the same `done` appended.
cat "$ROOT/benches/pipeline.lua" "$TMP/report.lua" >"$TMP/pipeline.lua"

RESULTS=$TMP/results.tsv
: >"$RESULTS"

field() { # name text: the value of name=value in text
    sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1
}

fmt_us() { # microseconds -> "812 us" or "1.23 ms"
    awk -v us="$1" 'BEGIN { if (us == "" || us == "-") print "-"; else if (us >= 1000) printf "%.2f ms", us / 1000; else printf "%.0f us", us }'
}

# One wrk run against the running server; prints a line and appends to $RESULTS.
run_wrk() { # section scenario server round port wrk-cpus threads conns lua [lua-args]
    local section=$1 scenario=$2 server=$3 round=$4 port=$5 cpus=$6 threads=$7 conns=$8 lua=$9
    shift 9
    local out=$TMP/wrk-$section-$scenario-$server-$round.txt
    local cpu0_before cpu1_before steal_before before after wall_before
    wall_before=$(date +%s%N)
    times >"$TMP/times.before"
    cpu0_before=$(cpu_busy_jiffies 0)
    cpu1_before=$(cpu_busy_jiffies 1)
    steal_before=$(steal_jiffies)
    before=$(cpu_ns "${SERVER_PIDS[@]}")
    local args=(-t"$threads" -c"$conns" -d"${DURATION}s" --timeout 2s --latency -s "$lua"
        "http://127.0.0.1:$port/")
    (($# > 0)) && args+=(-- "$@")
    pinned "$cpus"
    "${PIN[@]}" wrk "${args[@]}" >"$out" 2>&1 &
    local wrk_pid=$!
    STARTED+=("$wrk_pid")
    wait "$wrk_pid" || true
    forget "$wrk_pid"
    # Let the server finish closing wrk's connections: that work belongs to this run.
    sleep 0.5
    after=$(cpu_ns "${SERVER_PIDS[@]}")
    local cpu0 cpu1 window wrk_cpu steal
    times >"$TMP/times.after"
    wrk_cpu=$(($(children_cpu_cs "$TMP/times.after") - $(children_cpu_cs "$TMP/times.before")))
    cpu0=$(($(cpu_busy_jiffies 0) - cpu0_before))
    cpu1=$(($(cpu_busy_jiffies 1) - cpu1_before))
    steal=$(($(steal_jiffies) - steal_before))
    window=$((($(date +%s%N) - wall_before) / 10000000)) # hundredths of a second

    local result
    result=$(grep '^RESULT' "$out" || true)
    if [[ -z $result ]]; then
        say "  round $round  $(printf '%-10s %-8s' "$scenario" "$server")  wrk failed: $(tail -2 "$out" | tr '\n' ' ')"
        return 0
    fi
    local requests duration_us errors rps cpu_per_req p99
    requests=$(field requests "$result")
    duration_us=$(field duration_us "$result")
    errors=$(($(field connect "$result") + $(field read "$result") + $(field write "$result") +
        $(field timeout "$result") + $(field status "$result")))
    p99=$(field p99_us "$result")
    # wrk's histogram now and then comes back empty in pipelined runs (percentile 0): no figure.
    [[ $p99 == 0 ]] && p99=-
    read -r rps cpu_per_req <<<"$(awk -v r="$requests" -v d="$duration_us" -v c="$((after - before))" \
        'BEGIN { printf "%.0f %s\n", r / (d / 1e6), (r > 0 ? sprintf("%.0f", c / r) : "-") }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$scenario" "$server" "$round" \
        "$rps" "$cpu_per_req" "$p99" "$errors" >>"$RESULTS"
    ((window > 0)) || window=1
    printf '  round %s  %-10s %-8s %9s req/s  CPU %6s ns/req  p99 %9s  errors %s (connect %s read %s write %s timeout %s non-2xx %s)  busy: server %s%%, wrk %s%%, CPU0 %s%%, CPU1 %s%%, steal %s%%\n' \
        "$round" "$scenario" "$server" "$rps" "$cpu_per_req" "$(fmt_us "$p99")" "$errors" \
        "$(field connect "$result")" "$(field read "$result")" "$(field write "$result")" \
        "$(field timeout "$result")" "$(field status "$result")" \
        "$(((after - before) / 100000 / window))" "$((wrk_cpu * 100 / window))" \
        "$((cpu0 * 100 / window))" "$((cpu1 * 100 / window))" "$((steal * 100 / window))"
}

median() { # values on stdin -> median, or "-" when there are none
    { grep -v '^-$' || true; } | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

med() { # section scenario server column(5=rps 6=cpu 7=p99 8=errors)
    awk -F'\t' -v s="$1" -v c="$2" -v v="$3" -v col="$4" '$1 == s && $2 == c && $3 == v { print $col }' "$RESULTS" | median
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.3f", a / b }'; }

# ----- The machine -----
say "sockloop load benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
say "tools: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1), sockloop $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), floor built by $(cc --version | head -1)"
if [[ -n $BASELINE ]]; then
    say "baseline: $BASELINE ($("$BASELINE" --version 2>/dev/null | head -1), $(sha256sum "$BASELINE" | cut -c1-12); this build's: $(sha256sum "$SOCKLOOP" | cut -c1-12))"
fi
say "settings: ROUNDS=$ROUNDS DURATION=${DURATION}s ONLY=$ONLY, servers on CPU $SERVER_CPU, load generators on CPU $CLIENT_CPU, descriptors $NOFILE, autogroup nice $BENCH_NICE"
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Ports for sockloop, nginx and the baseline, different from each other (the floor takes
# port 0). Each section starts its servers on them and stops them at its end.
PORTS_GIVEN=()
pick_port() { # variable-name
    local p
    while true; do
        p=$(free_port)
        [[ " ${PORTS_GIVEN[*]} " == *" $p "* ]] || break
    done
    PORTS_GIVEN+=("$p")
    printf -v "$1" '%s' "$p"
}
pick_port SL_PORT
pick_port NG_PORT
pick_port BL_PORT

# ----- 1. One loop against one worker and the floor, pinned -----
# The baseline runs right after sockloop in most rounds, so that the two see the host alike.
HTTP_SERVERS=(sockloop nginx floor)
[[ -z $BASELINE ]] || HTTP_SERVERS=(sockloop baseline nginx floor)
if wants http; then
    say ""
    say "== 1 loop vs 1 nginx worker vs the floor: servers on CPU $SERVER_CPU, wrk -t1 on CPU $CLIENT_CPU =="
    say "columns: req/s; server CPU ns per request; p99 latency; errors; how busy the server,"
    say "wrk and each CPU were over the run (CPU0/CPU1 count every process, ours and others'),"
    say "and steal: time the host gave our vCPUs to someone else (percent of one CPU)"
    start_sockloop "$SOCKLOOP" "$SERVER_CPU" "$SL_PORT" --mode http --max-conns 20000
    remember sockloop "$SL_PORT"
    start_nginx "$SERVER_CPU" 1 "$NG_PORT"
    remember nginx "$NG_PORT"
    start_floor "$SERVER_CPU" --mode http
    remember floor "$FLOOR_PORT"
    if [[ -n $BASELINE ]]; then
        start_sockloop "$BASELINE" "$SERVER_CPU" "$BL_PORT" --mode http --max-conns 20000
        remember baseline "$BL_PORT"
    fi
    check_page sockloop "$SL_PORT"
    check_page nginx "$NG_PORT"
    check_page floor "$FLOOR_PORT" 0.5
    check_floor_shape "$SL_PORT" "$FLOOR_PORT"
    if [[ -n $BASELINE ]]; then check_page baseline "$BL_PORT"; fi

    for round in $(seq "$ROUNDS"); do
        for scenario in plain pipeline16 c10k; do
            mapfile -t order < <(in_turn "$round" "${HTTP_SERVERS[@]}")
            for server in "${order[@]}"; do
                use "$server"
                case $scenario in
                plain) run_wrk 1loop plain "$server" "$round" "$port" "$CLIENT_CPU" 1 50 "$TMP/report.lua" ;;
                pipeline16) run_wrk 1loop pipeline16 "$server" "$round" "$port" "$CLIENT_CPU" 1 50 \
                    "$TMP/pipeline.lua" "$PIPELINE_DEPTH" ;;
                c10k) run_wrk 1loop c10k "$server" "$round" "$port" "$CLIENT_CPU" 1 "$C10K_CONNS" \
                    "$TMP/report.lua" ;;
                esac
            done
        done
    done
    stop_all "${HTTP_SERVERS[@]}"
fi

# ----- 2. Two loops against two workers, nothing pinned -----
# No floor here: it is one thread, and two of them on SO_REUSEPORT would be a different
# floor from the one the other tables divide by.
THREAD_SERVERS=(sockloop nginx)
[[ -z $BASELINE ]] || THREAD_SERVERS=(sockloop baseline nginx)
if wants threads; then
    say ""
    say "== sockloop --threads 2 vs nginx 2 workers (reuseport): nothing pinned, wrk -t2 =="
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    start_sockloop "$SOCKLOOP" "" "$SL_PORT" --mode http --threads 2 --max-conns 20000
    remember sockloop "$SL_PORT"
    start_nginx "" 2 "$NG_PORT"
    remember nginx "$NG_PORT"
    if [[ -n $BASELINE ]]; then
        start_sockloop "$BASELINE" "" "$BL_PORT" --mode http --threads 2 --max-conns 20000
        remember baseline "$BL_PORT"
    fi
    for round in $(seq "$ROUNDS"); do
        for scenario in plain pipeline16; do
            mapfile -t order < <(in_turn "$round" "${THREAD_SERVERS[@]}")
            for server in "${order[@]}"; do
                use "$server"
                if [[ $scenario == plain ]]; then
                    run_wrk 2loops plain "$server" "$round" "$port" "" 2 50 "$TMP/report.lua"
                else
                    run_wrk 2loops pipeline16 "$server" "$round" "$port" "" 2 50 \
                        "$TMP/pipeline.lua" "$PIPELINE_DEPTH"
                fi
            done
        done
    done
    stop_all "${THREAD_SERVERS[@]}"
fi

# ----- 3. Memory per idle connection -----
declare -A IDLE_KIB
measure_idle() { # server variant
    local server=$1 variant=$2 port flags=()
    port=$(free_port)
    case $server in
    sockloop) start_sockloop "$SOCKLOOP" "$SERVER_CPU" "$port" --mode http --max-conns 20000 ;;
    baseline) start_sockloop "$BASELINE" "$SERVER_CPU" "$port" --mode http --max-conns 20000 ;;
    nginx) start_nginx "$SERVER_CPU" 1 "$port" ;;
    esac
    [[ $variant == after-request ]] && flags=(--http)
    sleep 0.3
    local fds_before rss_before
    fds_before=$(fd_count "$SERVER_MAIN")
    rss_before=$(rss_kib "$SERVER_MAIN")
    local out=$TMP/hold-$server-$variant.txt
    pinned "$CLIENT_CPU"
    "${PIN[@]}" "$HOLD_CONNS" --addr "127.0.0.1:$port" --conns "$IDLE_CONNS" --hold 60 "${flags[@]}" \
        >"$out" 2>&1 &
    local holder=$!
    STARTED+=("$holder")
    local ready=0
    for _ in $(seq 300); do
        if grep -qs '^READY' "$out"; then ready=1 && break; fi
        kill -0 "$holder" 2>/dev/null || break
        sleep 0.1
    done
    # READY means connect(2) returned on every socket; the server may still be accepting.
    for _ in $(seq 100); do
        (($(fd_count "$SERVER_MAIN") >= fds_before + IDLE_CONNS)) && break
        sleep 0.1
    done
    sleep 0.5
    local rss_after fds_after
    rss_after=$(rss_kib "$SERVER_MAIN")
    fds_after=$(fd_count "$SERVER_MAIN")
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    forget "$holder"
    stop_server
    if [[ $ready != 1 ]]; then
        say "  $server ($variant): hold_conns failed: $(tail -2 "$out" | tr '\n' ' ')"
        return 0
    fi
    local per_conn
    per_conn=$(awk -v a="$rss_after" -v b="$rss_before" -v n="$IDLE_CONNS" 'BEGIN { printf "%.3f", (a - b) / n }')
    IDLE_KIB[$server/$variant]=$per_conn
    printf '  %-8s %-14s RSS %6s KiB -> %6s KiB with %s more descriptors: %s KiB per connection\n' \
        "$server" "$variant" "$rss_before" "$rss_after" "$((fds_after - fds_before))" "$per_conn"
}
if wants idle; then
    say ""
    say "== RSS per idle connection: $IDLE_CONNS connections held open (examples/hold_conns) =="
    for variant in connected after-request; do
        for server in "${THREAD_SERVERS[@]}"; do
            measure_idle "$server" "$variant"
        done
    done
    say "  (connected: the client connected and sent nothing; after-request: one GET answered on"
    say "   each, then idle, the usual keep-alive connection. nginx: its worker process.)"
fi

# ----- 4. Echo -----
# One echo_load run against the named server, which must be current (use NAME); prints a
# line and appends size, client, server, msgs/s, MB/s, server ns/msg, round to $ECHO_RESULTS.
ECHO_RESULTS=$TMP/echo.tsv
: >"$ECHO_RESULTS"
run_echo() { # round size conns client server
    local round=$1 size=$2 conns=$3 client=$4 server=$5
    # At 64 KiB the client's CPU is the limit, and comparing every echoed byte is a sixth of
    # it: check the first message of each connection only. 64 B: check everything.
    # --zero-copy checks one message in 16 and discards the rest unread.
    local client_args=()
    ((size > 4096)) && client_args=(--verify-first-only)
    [[ $client == zero-copy ]] && client_args=(--zero-copy)
    local out=$TMP/echo-$size-$client-$server-$round.txt steal_before echo_started
    steal_before=$(steal_jiffies)
    echo_started=$(date +%s%N)
    pinned "$CLIENT_CPU"
    "${PIN[@]}" "$ECHO_LOAD" --addr "127.0.0.1:$port" --conns "$conns" --size "$size" \
        --duration "$DURATION" --server-pid "$SERVER_MAIN" "${client_args[@]}" >"$out" 2>&1 &
    local loader=$!
    STARTED+=("$loader")
    wait "$loader" || true
    forget "$loader"
    local result
    result=$(grep '^RESULT' "$out" || true)
    if [[ -z $result ]]; then
        say "  round $round  ${size} B x $conns, $client client, $server server: echo_load failed: $(tail -2 "$out" | tr '\n' ' ')"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$client" "$server" "$(field msgs_per_s "$result")" \
        "$(field mb_per_s "$result")" "$(field server_cpu_ns_per_msg "$result")" "$round" >>"$ECHO_RESULTS"
    local echo_window=$((($(date +%s%N) - echo_started) / 10000000))
    ((echo_window > 0)) || echo_window=1
    printf '  round %s  %5s B x %2s conns, %-10s client, %-11s server: %9s msgs/s  %8s MB/s  server CPU %6s ns/msg  (client CPU %s ns/msg)  steal %s%%\n' \
        "$round" "$size" "$conns" "$client" "$server" "$(field msgs_per_s "$result")" \
        "$(field mb_per_s "$result")" "$(field server_cpu_ns_per_msg "$result")" \
        "$(field client_cpu_ns_per_msg "$result")" \
        "$((($(steal_jiffies) - steal_before) * 100 / echo_window))"
}
echo_med() { # size client server column(4=msgs/s 5=MB/s 6=server ns/msg)
    awk -F'\t' -v s="$1" -v c="$2" -v v="$3" -v col="$4" '$1 == s && $2 == c && $3 == v { print $col }' \
        "$ECHO_RESULTS" | median
}

# The echo servers side by side: sockloop's default (read and write through memory) and
# --splice (socket -> pipe -> socket, no copy), the floor (read and write, one 64 KiB
# page-aligned buffer), and the baseline's two, driven in turn. At 64 KiB the client's own
# copies are the limit, so that size also runs with echo_load --zero-copy (vmsplice out,
# MSG_TRUNC in, one message in 16 checked), which leaves the server as the limit.
ECHO_SERVERS=(copy splice floor)
[[ -z $BASELINE ]] || ECHO_SERVERS=(copy base-copy splice base-splice floor)
if wants echo; then
    say ""
    say "== echo: sockloop --mode echo, --splice, and the floor on CPU $SERVER_CPU, examples/echo_load on CPU $CLIENT_CPU =="
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    # The ports picked for the http servers serve here too; the floor takes port 0.
    start_sockloop "$SOCKLOOP" "$SERVER_CPU" "$SL_PORT" --mode echo
    remember copy "$SL_PORT"
    start_sockloop "$SOCKLOOP" "$SERVER_CPU" "$NG_PORT" --mode echo --splice
    remember splice "$NG_PORT"
    start_floor "$SERVER_CPU" --mode echo
    remember floor "$FLOOR_PORT"
    if [[ -n $BASELINE ]]; then
        start_sockloop "$BASELINE" "$SERVER_CPU" "$BL_PORT" --mode echo
        remember base-copy "$BL_PORT"
        pick_port BL_SPLICE_PORT
        start_sockloop "$BASELINE" "$SERVER_CPU" "$BL_SPLICE_PORT" --mode echo --splice
        remember base-splice "$BL_SPLICE_PORT"
    fi
    for round in $(seq "$ROUNDS"); do
        for shape in "64 50 copying" "65536 10 copying" "65536 10 zero-copy"; do
            read -r size conns client <<<"$shape"
            mapfile -t order < <(in_turn "$round" "${ECHO_SERVERS[@]}")
            for server in "${order[@]}"; do
                use "$server"
                run_echo "$round" "$size" "$conns" "$client" "$server"
            done
        done
    done
    stop_all "${ECHO_SERVERS[@]}"
fi

# ----- 5. Where the floor's buffer sits in its page -----
# Issue 13 measured a bare C echo loop about twice as slow per 64 KiB message with its buffer
# 16 bytes into a page as at 0 or 2048. The kernel copies every message from the socket into
# the buffer and back out of it; this runs the same floor with the buffer at each of
# FLOOR_OFFSETS, side by side, so that whatever the alignment costs on this machine shows.
OFFSET_SERVERS=()
for offset in $FLOOR_OFFSETS; do OFFSET_SERVERS+=("floor@$offset"); done
if wants offsets; then
    say ""
    say "== the floor's echo, 64 KiB x 10, read buffer at page offsets $FLOOR_OFFSETS: floor on CPU $SERVER_CPU, echo_load on CPU $CLIENT_CPU =="
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    for offset in $FLOOR_OFFSETS; do
        start_floor "$SERVER_CPU" --mode echo --offset "$offset"
        remember "floor@$offset" "$FLOOR_PORT"
    done
    for round in $(seq "$ROUNDS"); do
        for client in copying zero-copy; do
            mapfile -t order < <(in_turn "$round" "${OFFSET_SERVERS[@]}")
            for server in "${order[@]}"; do
                use "$server"
                run_echo "$round" 65536 10 "$client" "$server"
            done
        done
    done
    stop_all "${OFFSET_SERVERS[@]}"
fi

# ----- 6. Summary -----
say ""
say "== Medians over $ROUNDS round(s) of ${DURATION}s =="
# The http table: one column per server, then sockloop's figure divided by each other's.
# shellcheck disable=SC2059 # the format is ours, with or without the baseline's columns
http_line() { # section scenario figure sockloop nginx floor baseline s/nginx s/floor s/baseline
    if [[ -n $BASELINE ]]; then
        printf '%-8s %-11s %-11s %11s %11s %11s %11s %15s %15s %18s\n' "$@"
    else
        printf '%-8s %-11s %-11s %11s %11s %11s %15s %15s\n' "${@:1:6}" "${@:8:2}"
    fi
}
HTTP_ROWS=()
wants http && HTTP_ROWS+=("1loop plain" "1loop pipeline16" "1loop c10k")
wants threads && HTTP_ROWS+=("2loops plain" "2loops pipeline16")
if ((${#HTTP_ROWS[@]} > 0)); then
    http_line section scenario figure sockloop nginx floor baseline sockloop/nginx sockloop/floor sockloop/baseline
fi
for row in "${HTTP_ROWS[@]}"; do
    read -r section scenario <<<"$row"
    first=1
    for figure in "req/s 5" "CPU_ns/req 6" "p99_us 7" "errors 8"; do
        read -r name col <<<"$figure"
        s=$(med "$section" "$scenario" sockloop "$col")
        n=$(med "$section" "$scenario" nginx "$col")
        f=$(med "$section" "$scenario" floor "$col")
        b=$(med "$section" "$scenario" baseline "$col")
        rn=$(ratio "$s" "$n") rf=$(ratio "$s" "$f") rb=$(ratio "$s" "$b")
        [[ $name == errors ]] && rn=- rf=- rb=-
        if [[ $first == 1 ]]; then
            http_line "$section" "$scenario" "${name//_/ }" "$s" "$n" "$f" "$b" "$rn" "$rf" "$rb"
            first=0
        else
            http_line "" "" "${name//_/ }" "$s" "$n" "$f" "$b" "$rn" "$rf" "$rb"
        fi
    done
done
if wants idle; then
    printf '%-21s %-12s %12s %12s%s\n' "idle RSS/conn" "KiB" sockloop nginx "${BASELINE:+     baseline}"
    for variant in connected after-request; do
        base=
        [[ -z $BASELINE ]] || base=$(printf ' %12s' "${IDLE_KIB[baseline/$variant]:--}")
        printf '  %-19s %-12s %12s %12s%s\n' "$variant" "" "${IDLE_KIB[sockloop/$variant]:--}" \
            "${IDLE_KIB[nginx/$variant]:--}" "$base"
    done
fi

# Echo: a row per server under each shape, and its CPU per message divided by the floor's and
# (sockloop's two) by the same mode of the baseline.
declare -A ECHO_NAME=([copy]="sockloop" [splice]="sockloop --splice" [floor]="floor"
    [base-copy]="baseline" [base-splice]="baseline --splice")
declare -A ECHO_BASE_OF=([copy]=base-copy [splice]=base-splice)
ECHO_SHAPES=("64 50 copying" "65536 10 copying" "65536 10 zero-copy")
shape_name() { # size conns client
    local size=$1 unit=B
    if ((size >= 1024)); then size=$((size / 1024)) unit=KiB; fi
    echo "$size $unit x $2, $3 client"
}
if wants echo; then
    printf '%-40s %12s %10s %14s %14s%s\n' "echo" "msgs/s" "MB/s" "server ns/msg" "ns/msg÷floor" \
        "${BASELINE:+  ns/msg÷baseline}"
    for shape in "${ECHO_SHAPES[@]}"; do
        read -r size conns client <<<"$shape"
        say "  $(shape_name "$size" "$conns" "$client")"
        floor_ns=$(echo_med "$size" "$client" floor 6)
        for server in "${ECHO_SERVERS[@]}"; do
            ns=$(echo_med "$size" "$client" "$server" 6)
            to_floor=-
            [[ $server == floor ]] || to_floor=$(ratio "$ns" "$floor_ns")
            to_base=
            if [[ -n $BASELINE ]]; then
                to_base=-
                [[ -z ${ECHO_BASE_OF[$server]:-} ]] ||
                    to_base=$(ratio "$ns" "$(echo_med "$size" "$client" "${ECHO_BASE_OF[$server]}" 6)")
                to_base=$(printf '  %16s' "$to_base")
            fi
            printf '    %-36s %12s %10s %14s %14s%s\n' "${ECHO_NAME[$server]}" \
                "$(echo_med "$size" "$client" "$server" 4)" "$(echo_med "$size" "$client" "$server" 5)" \
                "$ns" "$to_floor" "$to_base"
        done
    done
    say "(sockloop: the default, read(2) and write(2); --splice: through a pipe. floor: read(2)"
    say " and write(2) on one 64 KiB page-aligned buffer. zero-copy client: echo_load --zero-copy,"
    say " vmsplice(2) out and MSG_TRUNC in.)"
fi

if wants offsets; then
    first_offset=${OFFSET_SERVERS[0]#floor@}
    printf '%-40s %12s %10s %14s %14s\n' "floor echo 64 KiB x 10, buffer at" "msgs/s" "MB/s" \
        "server ns/msg" "÷ offset $first_offset"
    for client in copying zero-copy; do
        say "  $client client"
        first_ns=$(echo_med 65536 "$client" "${OFFSET_SERVERS[0]}" 6)
        for server in "${OFFSET_SERVERS[@]}"; do
            ns=$(echo_med 65536 "$client" "$server" 6)
            printf '    %-36s %12s %10s %14s %14s\n' "page offset ${server#floor@}" \
                "$(echo_med 65536 "$client" "$server" 4)" "$(echo_med 65536 "$client" "$server" 5)" \
                "$ns" "$(ratio "$ns" "$first_ns")"
        done
    done
fi

if wants http || wants threads; then
    say "p99: wrk's, which corrects for coordinated omission assuming one request per round trip;"
    say "with 16 per round trip the correction is wrong (for every server), and for a fast server"
    say "it adds samples below the histogram's minimum so that wrk's percentile comes back 0 (-)."
fi

# ----- This build against the baseline -----
# The one figure per workload that a refactor must not move: CPU per request or message,
# this build's median over the baseline's, from the same interleaved rounds. With more than
# one round, the ratio in each round too: how far apart they are is the noise to beat.
if [[ -n $BASELINE ]]; then
    say ""
    say "== This sockloop against the baseline: server CPU per request or message, this/baseline =="
    say "   (baseline: $BASELINE)"
    against_baseline() { # description this baseline [per-round ratios]
        local r line
        r=$(ratio "$2" "$3")
        line=$(printf '  %-54s %10s %10s %8s   %-18s %s' "$1" "$2" "$3" "$r" "$(awk -v r="$r" 'BEGIN {
            if (r == "-") print "-"; else if (r > 1.05) print "more than 5% above";
            else if (r < 0.95) print "more than 5% below"; else print "within 5%" }')" "${4:-}")
        say "${line%"${line##*[! ]}"}"
    }
    # this/baseline in each round where both ran, in round order.
    http_rounds() { # section scenario
        ((ROUNDS > 1)) || return 0
        awk -F'\t' -v s="$1" -v c="$2" -v n="$ROUNDS" '$1 == s && $2 == c && $6 != "-" { v[$3, $4] = $6 }
            END { for (i = 1; i <= n; i++) if ((("sockloop", i) in v) && (("baseline", i) in v) && v["baseline", i] > 0)
                printf "%.2f ", v["sockloop", i] / v["baseline", i] }' "$RESULTS"
    }
    echo_rounds() { # size client server baseline-server
        ((ROUNDS > 1)) || return 0
        awk -F'\t' -v s="$1" -v c="$2" -v a="$3" -v b="$4" -v n="$ROUNDS" '$1 == s && $2 == c && $6 != "-" { v[$3, $7] = $6 }
            END { for (i = 1; i <= n; i++) if (((a, i) in v) && ((b, i) in v) && v[b, i] > 0) printf "%.2f ", v[a, i] / v[b, i] }' \
            "$ECHO_RESULTS"
    }
    if ((ROUNDS > 1)); then
        printf '  %-54s %10s %10s %8s   %-18s %s\n' "" "this" "baseline" "ratio" "" "each round"
    else
        printf '  %-54s %10s %10s %8s\n' "" "this" "baseline" "ratio"
    fi
    for row in "1loop plain 1 loop, keep-alive" "1loop pipeline16 1 loop, 16-deep pipeline" "1loop c10k 1 loop, C10K" \
        "2loops plain 2 loops, keep-alive" "2loops pipeline16 2 loops, 16-deep pipeline"; do
        read -r section scenario description <<<"$row"
        if [[ $section == 1loop ]]; then wants http || continue; else wants threads || continue; fi
        against_baseline "$description, ns/req" "$(med "$section" "$scenario" sockloop 6)" \
            "$(med "$section" "$scenario" baseline 6)" "$(http_rounds "$section" "$scenario")"
    done
    if wants idle; then
        for variant in connected after-request; do
            against_baseline "idle RSS per connection ($variant), KiB" "${IDLE_KIB[sockloop/$variant]:--}" \
                "${IDLE_KIB[baseline/$variant]:--}"
        done
    fi
    if wants echo; then
        for shape in "${ECHO_SHAPES[@]}"; do
            read -r size conns client <<<"$shape"
            for server in copy splice; do
                mode=default
                [[ $server == splice ]] && mode=--splice
                against_baseline "echo $(shape_name "$size" "$conns" "$client"), $mode, ns/msg" \
                    "$(echo_med "$size" "$client" "$server" 6)" \
                    "$(echo_med "$size" "$client" "${ECHO_BASE_OF[$server]}" 6)" \
                    "$(echo_rounds "$size" "$client" "$server" "${ECHO_BASE_OF[$server]}")"
            done
        done
    fi
    say "(how far from 1 noise alone takes these: run with BASELINE set to this very build. On a"
    say " machine shared with compilers, ROUNDS=1 DURATION=3 put identical builds up to 25% apart;"
    say " more rounds narrow it, and the busy and steal columns above show the disturbed rounds.)"
fi

# Only for the sections that ran: the others would print a row of "-".
if wants http || wants threads || wants idle || wants echo; then
    say ""
    say "== Targets (issue 6) =="
    verdict() { # value op limit -> PASS/MISS/-
        awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
            if (v == "-" || v == "") { print "-"; exit }
            ok = (op == "<=") ? (v + 0 <= l + 0) : (v + 0 >= l + 0)
            print ok ? "PASS" : "MISS" }'
    }
    target() { # description measured op limit shown-limit
        printf '  %-52s %12s   %-12s %s\n' "$1" "$2" "$3 $5" "$(verdict "$2" "$3" "$4")"
    }
    ratio_of() { ratio "$(med "$1" "$2" sockloop 6)" "$(med "$1" "$2" nginx 6)"; }
    target "plain keep-alive: CPU/req, sockloop/nginx" "$(ratio_of 1loop plain)" "<=" 0.9 "0.9"
    target "pipelined 16: CPU/req, sockloop/nginx" "$(ratio_of 1loop pipeline16)" "<=" 0.12 "0.12"
    target "C10K: errors (sockloop)" "$(med 1loop c10k sockloop 8)" "<=" 0 "0"
    c10k_share=$(awk -v a="$(med 1loop c10k sockloop 5)" -v b="$(med 1loop plain sockloop 5)" \
        'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.3f", a / b }')
    target "C10K: req/s / c50 req/s (sockloop)" "$c10k_share" ">=" 0.8 "0.8"
    idle_worst=$(awk -v a="${IDLE_KIB[sockloop/connected]:--}" -v b="${IDLE_KIB[sockloop/after-request]:--}" \
        'BEGIN { if (a == "-" || b == "-") print "-"; else print (a > b ? a : b) }')
    target "idle RSS per connection, KiB (sockloop, worse of two)" "$idle_worst" "<=" 0.25 "0.25"
    echo_gbs=$(awk -v m="$(echo_med 65536 zero-copy splice 5)" 'BEGIN { if (m == "-") print "-"; else printf "%.3f", m / 1000 }')
    target "echo 64 KiB x 10: GB/s (--splice, zero-copy client)" "$echo_gbs" ">=" 3.5 "3.5"
    echo_us=$(awk -v n="$(echo_med 64 copying copy 6)" 'BEGIN { if (n == "-") print "-"; else printf "%.2f", n / 1000 }')
    target "echo 64 B x 50: server CPU per message, us" "$echo_us" "<=" 5 "5"
    target "--threads 2 plain: CPU/req, sockloop/nginx" "$(ratio_of 2loops plain)" "<=" 0.9 "0.9"
    target "--threads 2 pipelined 16: CPU/req, sockloop/nginx" "$(ratio_of 2loops pipeline16)" "<=" 0.12 "0.12"
fi

# ----- 7. The chart -----
# Server CPU per request or message, one panel per workload, each server a bar: the scales
# run from a few hundred ns (pipelined) to tens of µs (echo 64 KiB), so each panel has its
# own linear axis, on which ratios read as heights. Over each bar, its value and its multiple
# of the floor. gnuplot reads the bars from $CHART_DATA: one block per panel (name, value,
# note, colour), blocks apart by two blank lines, so that `index N` picks panel N.
CHART_DATA=$TMP/chart.tsv
: >"$CHART_DATA"
CHART_PANELS=() # "title|y label", one per block of $CHART_DATA
# One colour per server, the same in every panel.
declare -A COLOUR=([sockloop]=1f77b4 [copy]=1f77b4 [splice]=6baed6 [nginx]=2ca02c [floor]=7f7f7f
    [baseline]=ff7f0e [base-copy]=ff7f0e [base-splice]=fdae6b)
chart_panel() { # title y-label "name|value|colour|note"...; bars without a value are left out
    local title=$1 ylabel=$2 item name value colour note rows=()
    shift 2
    for item in "$@"; do
        IFS='|' read -r name value colour note <<<"$item"
        [[ -n $value && $value != - ]] || continue
        # "sockloop --splice" is too wide under a bar: gnuplot puts what follows "~" on a
        # line of its own (two_lines in draw_chart).
        rows+=("${name/ /\~}"$'\t'"$value"$'\t'"${note:- }"$'\t'"$((16#$colour))")
    done
    ((${#rows[@]} > 0)) || return 0
    ((${#CHART_PANELS[@]} == 0)) || printf '\n\n' >>"$CHART_DATA"
    printf '%s\n' "${rows[@]}" >>"$CHART_DATA"
    CHART_PANELS+=("$title|$ylabel")
}
times_floor() { # value floor-value -> "2.31x floor", or nothing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f× floor", a / b }'
}
http_panel() { # section scenario title
    local items=() server v f
    f=$(med "$1" "$2" floor 6)
    for server in sockloop nginx floor baseline; do
        v=$(med "$1" "$2" "$server" 6)
        items+=("$server|$v|${COLOUR[$server]}|$([[ $server == floor ]] || times_floor "$v" "$f")")
    done
    chart_panel "$3" "CPU ns per request" "${items[@]}"
}
if wants http; then
    http_panel 1loop plain "keep-alive, wrk -t1 -c50"
    http_panel 1loop pipeline16 "16-deep pipeline, wrk -t1 -c50"
    http_panel 1loop c10k "C10K, wrk -t1 -c10000"
fi
if wants threads; then
    http_panel 2loops plain "2 loops or workers, keep-alive"
    http_panel 2loops pipeline16 "2 loops or workers, pipeline"
fi
if wants echo; then
    for shape in "${ECHO_SHAPES[@]}"; do
        read -r size conns client <<<"$shape"
        items=()
        f=$(echo_med "$size" "$client" floor 6)
        for server in "${ECHO_SERVERS[@]}"; do
            v=$(echo_med "$size" "$client" "$server" 6)
            items+=("${ECHO_NAME[$server]}|$v|${COLOUR[$server]}|$([[ $server == floor ]] || times_floor "$v" "$f")")
        done
        chart_panel "echo $(shape_name "$size" "$conns" "$client")" "CPU ns per message" "${items[@]}"
    done
fi
if wants offsets; then
    for client in copying zero-copy; do
        items=()
        for server in "${OFFSET_SERVERS[@]}"; do
            v=$(echo_med 65536 "$client" "$server" 6)
            mb=$(echo_med 65536 "$client" "$server" 5)
            items+=("offset ${server#floor@}|$v|${COLOUR[floor]}|$mb MB/s")
        done
        chart_panel "floor echo $(shape_name 65536 10 "$client"), by buffer page offset" \
            "CPU ns per message" "${items[@]}"
    done
fi

if [[ -n ${LOG_DIR:-} ]]; then
    CHART=$LOG_DIR/load.svg
else
    CHART=$(dirname "$TARGET")/load/load-$(date -u +%Y%m%d-%H%M%S).svg
fi
draw_chart() {
    local n=${#CHART_PANELS[@]} cols rows i title ylabel
    cols=$((n < 3 ? n : 3))
    rows=$(((n + cols - 1) / cols))
    {
        printf 'set terminal svg size %d,%d dynamic font "sans,11" background "#ffffff"\n' \
            $((cols * 440)) $((rows * 330 + 50))
        printf 'set output "%s"\n' "$CHART"
        printf 'set encoding utf8\nset datafile separator "\\t"\n'
        printf 'set style fill solid 0.85 border -1\nset boxwidth 0.7\n'
        printf 'set yrange [0:*]\nset offsets 0.6, 0.6, graph 0.22, 0\nset bmargin 4\n'
        printf 'set xtics nomirror scale 0 font ",9"\nset ytics nomirror font ",9"\nset border 3\n'
        printf 'set grid ytics lc rgb "#e0e0e0"\n'
        printf 'two_lines(s) = strstrt(s, "~") ? s[1:strstrt(s, "~") - 1]."\\n".s[strstrt(s, "~") + 1:] : s\n'
        printf 'set multiplot layout %d,%d title "%s"\n' "$rows" "$cols" \
            "sockloop benches/load.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'): server CPU per request or message, medians of $ROUNDS x ${DURATION}s (lower is better)"
        for ((i = 0; i < n; i++)); do
            IFS='|' read -r title ylabel <<<"${CHART_PANELS[i]}"
            printf 'set title "%s" font ",11"\nset ylabel "%s" font ",9"\n' "$title" "$ylabel"
            printf 'plot "%s" index %d using 0:2:4:xticlabels(two_lines(strcol(1))) with boxes lc rgb variable notitle, \\\n' "$CHART_DATA" "$i"
            # shellcheck disable=SC2016 # $2 is gnuplot's column 2
            printf '     "" index %d using 0:2:(sprintf("%%.0f\\n%%s", $2, strcol(3))) with labels offset 0,1.3 font ",8" notitle\n' "$i"
        done
        printf 'unset multiplot\n'
    } >"$TMP/chart.gp"
    mkdir -p "$(dirname "$CHART")" && gnuplot "$TMP/chart.gp" 2>"$TMP/gnuplot.log"
}
if ((${#CHART_PANELS[@]} > 0)); then
    say ""
    if draw_chart; then
        say "chart: $CHART"
    else
        say "chart: gnuplot failed: $(tail -3 "$TMP/gnuplot.log" | tr '\n' ' ')"
    fi
fi

say ""
say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
