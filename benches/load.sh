#!/usr/bin/env bash
# sockloop against nginx, side by side, on this machine's loopback.
#
#   benches/load.sh                      # ROUNDS=3 DURATION=10: about ten minutes
#   ROUNDS=1 DURATION=3 benches/load.sh  # a quick look
#
# What it does, in order:
#  1. installs wrk and nginx from Debian if they are missing, builds sockloop (release);
#  2. one loop against one nginx worker, each server pinned to CPU 0 and wrk to CPU 1,
#     interleaved rounds (sockloop, nginx, sockloop, nginx, ...) of
#       wrk -t1 -c50 (plain keep-alive), wrk -t1 -c50 with a 16-deep pipeline,
#       wrk -t1 -c10000 (C10K);
#  3. sockloop --threads 2 against nginx with 2 workers, nothing pinned, wrk -t2 -c50,
#     plain and pipelined;
#  4. RSS per idle connection with 5,000 connections held open, both servers;
#  5. echo mode, the default and --splice side by side: examples/echo_load at
#     64 B x 50 connections and 64 KiB x 10 connections, the latter also with a client that
#     does not copy (--zero-copy);
#  6. medians per server and scenario, the ratio sockloop/nginx, and the targets of
#     issue 6 with PASS or MISS.
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
# LOG_DIR (unset: where to keep wrk's and echo_load's raw output, and the results table).
# Exits non-zero only when it cannot set up (install, build, start a server); a run that
# fails is reported as such and the script goes on.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
IDLE_CONNS=${IDLE_CONNS:-5000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_NICE=${BENCH_NICE:--10}
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
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
SOCKLOOP=$TARGET/sockloop
ECHO_LOAD=$TARGET/examples/echo_load
HOLD_CONNS=$TARGET/examples/hold_conns

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

start_sockloop() { # cpus port extra-args...
    local cpus=$1 port=$2
    shift 2
    pinned "$cpus"
    "${PIN[@]}" "$SOCKLOOP" --addr "127.0.0.1:$port" "$@" 2>>"$TMP/sockloop.log" &
    local pid=$!
    STARTED+=("$pid")
    wait_for_port "$port" "$pid" || fail "sockloop did not start: $(tail -3 "$TMP/sockloop.log")"
    SERVER_PIDS=("$pid")
    SERVER_MAIN=$pid
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

# One GET / with Connection: close, the raw response on stdout (headers and body).
fetch() { # port
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf "GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$1" >&3
        cat <&3' _ "$1" 2>/dev/null || true
}

# Check that a server answers 200 with exactly our body and Content-Type; show its head.
check_page() { # name port
    local response head body
    response=$(fetch "$2"; echo x)
    response=${response%x}
    head=${response%%$'\r\n\r\n'*}
    body=${response#*$'\r\n\r\n'}
    say "  $1 answers ($(printf '%s' "$response" | wc -c) bytes with Connection: close):"
    printf '%s\n' "$head" | tr -d '\r' | sed 's/^/    | /'
    [[ $head == "HTTP/1.1 200"* ]] || fail "$1 did not answer 200"
    [[ $body == "$BODY" ]] || fail "$1 served a different body: $(printf '%q' "$body")"
    tr -d '\r' <<<"$head" | grep -qix "content-type: $CONTENT_TYPE" || fail "$1: wrong Content-Type"
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
say "tools: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1), sockloop $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
say "settings: ROUNDS=$ROUNDS DURATION=${DURATION}s, servers on CPU $SERVER_CPU, load generators on CPU $CLIENT_CPU, descriptors $NOFILE, autogroup nice $BENCH_NICE"
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# ----- 1. One loop against one worker, pinned -----
SL_PORT=$(free_port)
NG_PORT=$(free_port)
while [[ $NG_PORT == "$SL_PORT" ]]; do NG_PORT=$(free_port); done

say ""
say "== 1 loop vs 1 nginx worker: servers on CPU $SERVER_CPU, wrk -t1 on CPU $CLIENT_CPU =="
say "columns: req/s; server CPU ns per request; p99 latency; errors; how busy the server,"
say "wrk and each CPU were over the run (CPU0/CPU1 count every process, ours and others'),"
say "and steal: time the host gave our vCPUs to someone else (percent of one CPU)"
start_sockloop "$SERVER_CPU" "$SL_PORT" --mode http --max-conns 20000
SL_PIDS=("${SERVER_PIDS[@]}")
start_nginx "$SERVER_CPU" 1 "$NG_PORT"
NG_PIDS=("${SERVER_PIDS[@]}")
check_page sockloop "$SL_PORT"
check_page nginx "$NG_PORT"

for round in $(seq "$ROUNDS"); do
    for scenario in plain pipeline16 c10k; do
        for server in sockloop nginx; do
            if [[ $server == sockloop ]]; then
                SERVER_PIDS=("${SL_PIDS[@]}") port=$SL_PORT
            else
                SERVER_PIDS=("${NG_PIDS[@]}") port=$NG_PORT
            fi
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
SERVER_PIDS=("${SL_PIDS[@]}")
stop_server
SERVER_PIDS=("${NG_PIDS[@]}")
stop_server

# ----- 2. Two loops against two workers, nothing pinned -----
say ""
say "== sockloop --threads 2 vs nginx 2 workers (reuseport): nothing pinned, wrk -t2 =="
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
start_sockloop "" "$SL_PORT" --mode http --threads 2 --max-conns 20000
SL_PIDS=("${SERVER_PIDS[@]}")
start_nginx "" 2 "$NG_PORT"
NG_PIDS=("${SERVER_PIDS[@]}")
for round in $(seq "$ROUNDS"); do
    for scenario in plain pipeline16; do
        for server in sockloop nginx; do
            if [[ $server == sockloop ]]; then
                SERVER_PIDS=("${SL_PIDS[@]}") port=$SL_PORT
            else
                SERVER_PIDS=("${NG_PIDS[@]}") port=$NG_PORT
            fi
            if [[ $scenario == plain ]]; then
                run_wrk 2loops plain "$server" "$round" "$port" "" 2 50 "$TMP/report.lua"
            else
                run_wrk 2loops pipeline16 "$server" "$round" "$port" "" 2 50 \
                    "$TMP/pipeline.lua" "$PIPELINE_DEPTH"
            fi
        done
    done
done
SERVER_PIDS=("${SL_PIDS[@]}")
stop_server
SERVER_PIDS=("${NG_PIDS[@]}")
stop_server

# ----- 3. Memory per idle connection -----
say ""
say "== RSS per idle connection: $IDLE_CONNS connections held open (examples/hold_conns) =="
declare -A IDLE_KIB
measure_idle() { # server variant
    local server=$1 variant=$2 port flags=()
    port=$(free_port)
    if [[ $server == sockloop ]]; then
        start_sockloop "$SERVER_CPU" "$port" --mode http --max-conns 20000
    else
        start_nginx "$SERVER_CPU" 1 "$port"
    fi
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
        if grep -q '^READY' "$out"; then ready=1 && break; fi
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
for variant in connected after-request; do
    for server in sockloop nginx; do
        measure_idle "$server" "$variant"
    done
done
say "  (connected: the client connected and sent nothing; after-request: one GET answered on"
say "   each, then idle, the usual keep-alive connection. nginx: its worker process.)"

# ----- 4. Echo -----
# Two echo servers side by side: the default (read and write through memory) and --splice
# (socket -> pipe -> socket, no copy), driven in turn, in alternating order. At 64 KiB the
# client's own copies are the limit, so that size also runs with echo_load --zero-copy
# (vmsplice out, MSG_TRUNC in, one message in 16 checked), which leaves the server as the limit.
say ""
say "== echo: sockloop --mode echo on CPU $SERVER_CPU, examples/echo_load on CPU $CLIENT_CPU =="
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
ECHO_SPLICE_PORT=$(free_port)
ECHO_COPY_PORT=$(free_port)
while [[ $ECHO_COPY_PORT == "$ECHO_SPLICE_PORT" ]]; do ECHO_COPY_PORT=$(free_port); done
start_sockloop "$SERVER_CPU" "$ECHO_SPLICE_PORT" --mode echo --splice
ECHO_SPLICE_PID=$SERVER_MAIN
ECHO_SPLICE_PIDS=("${SERVER_PIDS[@]}")
start_sockloop "$SERVER_CPU" "$ECHO_COPY_PORT" --mode echo
ECHO_COPY_PID=$SERVER_MAIN
ECHO_COPY_PIDS=("${SERVER_PIDS[@]}")
ECHO_RESULTS=$TMP/echo.tsv
: >"$ECHO_RESULTS"
for round in $(seq "$ROUNDS"); do
    for shape in "64 50 copying" "65536 10 copying" "65536 10 zero-copy"; do
        read -r size conns client <<<"$shape"
        order=(copy splice)
        ((round % 2 == 0)) && order=(splice copy)
        for server in "${order[@]}"; do
            if [[ $server == splice ]]; then
                port=$ECHO_SPLICE_PORT pid=$ECHO_SPLICE_PID
            else
                port=$ECHO_COPY_PORT pid=$ECHO_COPY_PID
            fi
            # At 64 KiB the client's CPU is the limit, and comparing every echoed byte is a
            # sixth of it: check the first message of each connection only. 64 B: check
            # everything. --zero-copy checks one message in 16 and discards the rest unread.
            client_args=()
            ((size > 4096)) && client_args=(--verify-first-only)
            [[ $client == zero-copy ]] && client_args=(--zero-copy)
            out=$TMP/echo-$size-$client-$server-$round.txt
            steal_before=$(steal_jiffies)
            echo_started=$(date +%s%N)
            pinned "$CLIENT_CPU"
            "${PIN[@]}" "$ECHO_LOAD" --addr "127.0.0.1:$port" --conns "$conns" --size "$size" \
                --duration "$DURATION" --server-pid "$pid" "${client_args[@]}" >"$out" 2>&1 &
            loader=$!
            STARTED+=("$loader")
            wait "$loader" || true
            forget "$loader"
            result=$(grep '^RESULT' "$out" || true)
            if [[ -z $result ]]; then
                say "  round $round  ${size} B x $conns, $client client, $server server: echo_load failed: $(tail -2 "$out" | tr '\n' ' ')"
                continue
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$client" "$server" "$(field msgs_per_s "$result")" \
                "$(field mb_per_s "$result")" "$(field server_cpu_ns_per_msg "$result")" >>"$ECHO_RESULTS"
            echo_window=$((($(date +%s%N) - echo_started) / 10000000))
            ((echo_window > 0)) || echo_window=1
            printf '  round %s  %5s B x %2s conns, %-10s client, %-6s server: %9s msgs/s  %8s MB/s  server CPU %6s ns/msg  (client CPU %s ns/msg)  steal %s%%\n' \
                "$round" "$size" "$conns" "$client" "$server" "$(field msgs_per_s "$result")" \
                "$(field mb_per_s "$result")" "$(field server_cpu_ns_per_msg "$result")" \
                "$(field client_cpu_ns_per_msg "$result")" \
                "$((($(steal_jiffies) - steal_before) * 100 / echo_window))"
        done
    done
done
SERVER_PIDS=("${ECHO_SPLICE_PIDS[@]}")
stop_server
SERVER_PIDS=("${ECHO_COPY_PIDS[@]}")
stop_server
echo_med() { # size client server column(4=msgs/s 5=MB/s 6=server ns/msg)
    awk -F'\t' -v s="$1" -v c="$2" -v v="$3" -v col="$4" '$1 == s && $2 == c && $3 == v { print $col }' \
        "$ECHO_RESULTS" | median
}

# ----- 5. Summary -----
say ""
say "== Medians over $ROUNDS round(s) of ${DURATION}s =="
printf '%-8s %-11s %-12s %12s %12s %15s\n' section scenario figure sockloop nginx sockloop/nginx
for row in "1loop plain" "1loop pipeline16" "1loop c10k" "2loops plain" "2loops pipeline16"; do
    read -r section scenario <<<"$row"
    first=1
    for figure in "req/s 5" "CPU_ns/req 6" "p99_us 7" "errors 8"; do
        read -r name col <<<"$figure"
        s=$(med "$section" "$scenario" sockloop "$col")
        n=$(med "$section" "$scenario" nginx "$col")
        r=$(ratio "$s" "$n")
        [[ $name == errors ]] && r=-
        if [[ $first == 1 ]]; then
            printf '%-8s %-11s %-12s %12s %12s %15s\n' "$section" "$scenario" "${name//_/ }" "$s" "$n" "$r"
            first=0
        else
            printf '%-8s %-11s %-12s %12s %12s %15s\n' "" "" "${name//_/ }" "$s" "$n" "$r"
        fi
    done
done
printf '%-21s %-12s %12s %12s\n' "idle RSS/conn" "KiB" sockloop nginx
for variant in connected after-request; do
    printf '  %-19s %-12s %12s %12s\n' "$variant" "" "${IDLE_KIB[sockloop/$variant]:--}" "${IDLE_KIB[nginx/$variant]:--}"
done
printf '%-44s %12s %12s %16s\n' "echo (sockloop)" "msgs/s" "MB/s" "server ns/msg"
for row in "64 copying" "65536 copying" "65536 zero-copy"; do
    read -r size client <<<"$row"
    for server in copy splice; do
        printf '  %-42s %12s %12s %16s\n' "$size B, $client client, $server server" \
            "$(echo_med "$size" "$client" "$server" 4)" "$(echo_med "$size" "$client" "$server" 5)" \
            "$(echo_med "$size" "$client" "$server" 6)"
    done
done
say "(copy server: the default, read(2) and write(2); splice server: --splice, through a pipe."
say " zero-copy client: echo_load --zero-copy, vmsplice(2) out and MSG_TRUNC in.)"

say "p99: wrk's, which corrects for coordinated omission assuming one request per round trip;"
say "with 16 per round trip the correction is wrong (for both servers), and for a fast server"
say "it adds samples below the histogram's minimum so that wrk's percentile comes back 0 (-)."

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
say ""
say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
