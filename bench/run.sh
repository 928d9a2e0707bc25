#!/usr/bin/env bash
# mdl benchmark: mdl (mdld + mdlctl) against curl and aria2c on loopback nginx.
#
#   bench/run.sh                 full run: 5 runs per case and tool, interleaved; median and
#                                min-max (about 5 minutes plus bench/store.sh and the build)
#   BENCH_QUICK=1 bench/run.sh   quick: 1 run per case, 256 MiB file for the capped case (~2 min)
#
# Environment knobs (all optional):
#   BENCH_QUICK=1                  quick mode (see above)
#   BENCH_RUNS=N                   runs per case (default 5, quick 1); also passed to bench/store.sh
#   BENCH_CAPPED_CURL_RUNS=N       runs of the single-connection curl in the capped case (default 1:
#                                  it takes ~41 s a run and is no target's peer)
#   BENCH_TOOLS=mdl,curl,aria2c    which tools to run ("curl" includes "curl + sha256sum")
#   BENCH_SCENARIOS=unthrottled,capped,repo,store   (store: bench/store.sh, the 100k-job case)
#   BENCH_PORT=18080               the unthrottled nginx port; the capped one is PORT+1
#   BENCH_NO_BUILD=1               use the existing target/release binaries as they are
#   BENCH_MDL_ENGINE='K = V; ...'  extra [engine] settings for mdld, e.g. the checkpoints of
#                                  before issue #9: 'checkpoint_bytes = 134217728;
#                                  checkpoint_interval_ms = 2000' (compare runs side by side)
#   BENCH_WWW_TMPFS=1              serve the test data from a tmpfs (root): the source files
#                                  cost no disk, and only the downloads touch it
#
# Everything it writes goes under bench/work/ (gitignored). See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=$BENCH_DIR/work
HELPER=$BENCH_DIR/bench.py

QUICK=${BENCH_QUICK:-0}
[[ $QUICK == 1 ]] && default_runs=1 || default_runs=5
RUNS=${BENCH_RUNS:-$default_runs}
TOOLS=${BENCH_TOOLS:-mdl,curl,aria2c}
SCENARIOS=${BENCH_SCENARIOS:-unthrottled,capped,repo,store}
CAPPED_CURL_RUNS=${BENCH_CAPPED_CURL_RUNS:-1}
PORT_A=${BENCH_PORT:-18080}
PORT_B=$((PORT_A + 1))
CAP_RATE=25m # nginx limit_rate: 25 MiB/s per connection

log() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}
has_tool() { [[ ,$TOOLS, == *,$1,* ]]; }
has_scenario() { [[ ,$SCENARIOS, == *,$1,* ]]; }
# Float arithmetic: calc 'EXPR' with awk.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"
[[ $CAPPED_CURL_RUNS =~ ^[0-9]+$ ]] || die "BENCH_CAPPED_CURL_RUNS must be a number (got '$CAPPED_CURL_RUNS')"
BENCH_T0=$(date +%s)
for t in ${TOOLS//,/ }; do
    [[ $t == mdl || $t == curl || $t == aria2c ]] || die "unknown tool '$t' in BENCH_TOOLS (use mdl,curl,aria2c)"
done
for s in ${SCENARIOS//,/ }; do
    [[ $s == unthrottled || $s == capped || $s == repo || $s == store ]] ||
        die "unknown scenario '$s' in BENCH_SCENARIOS (use unthrottled,capped,repo,store)"
done

# Loopback only: no proxy may sit between the tools and nginx (curl, aria2c and reqwest all
# honour these variables).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
export LC_ALL=C

# ---------------------------------------------------------------------------------------------
# 0. Is the machine quiet? Another mdld, a cargo build or test, or a busy CPU make every number
#    here noisy: warn loudly (and say so in the results), but go on.

QUIET_WARNINGS=()
check_quiet() { # WHEN
    local others
    # pid and the first words of each command line: enough to find it.
    others=$(pgrep -a mdld 2>/dev/null | grep -v -F "$WORK/mdld-data" | cut -c1-100 || true)
    [[ -n $others ]] && QUIET_WARNINGS+=("$1: other mdld running: $(paste -sd';' <<<"$others")")
    others=$(pgrep -a -f 'cargo (test|build|nextest|clippy|run)|rustc ' 2>/dev/null | cut -c1-100 || true)
    [[ -n $others ]] && QUIET_WARNINGS+=("$1: $(wc -l <<<"$others") cargo/rustc process(es): $(head -n 3 <<<"$others" | paste -sd';')")
    # How busy the CPUs are now, over one second (/proc/stat), while nothing of this benchmark
    # runs (its daemon and nginx idle between cases). Not the load average: its one-minute
    # mean still holds the previous case, so every case after the first would trip it.
    local busy
    busy=$(busy_percent)
    if awk -v b="$busy" 'BEGIN { exit !(b > 25) }'; then
        QUIET_WARNINGS+=("$1: CPUs ${busy} % busy over 1 s with the benchmark idle ($(nproc) cores)")
    fi
    return 0
}
busy_percent() { # the share of all CPUs' time spent busy over the next second, in %
    local a b
    a=$(head -n 1 /proc/stat)
    sleep 1
    b=$(head -n 1 /proc/stat)
    # cpu user nice system idle iowait irq softirq steal guest guest_nice: idle = idle +
    # iowait; guest time is already counted in user and nice, so the sum stops at steal.
    awk -v a="$a" -v b="$b" 'BEGIN {
        split(a, x); split(b, y); total = 0
        for (i = 2; i <= 9; i++) total += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (total > 0 ? 100 * (total - idle) / total : 0) }'
}
print_quiet_warnings() {
    local w
    ((${#QUIET_WARNINGS[@]})) || return 0
    printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    printf '!!! WARNING: the machine is NOT quiet; the numbers below are noisy:\n' >&2
    for w in "${QUIET_WARNINGS[@]}"; do printf '!!!   %s\n' "$w" >&2; done
    printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}
check_quiet "at start"
print_quiet_warnings

# ---------------------------------------------------------------------------------------------
# 1. Dependencies

log "Checking dependencies"
command -v python3 >/dev/null || die "python3 is required"
NGINX=$(command -v nginx || true)
[[ -n $NGINX ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; }
missing=()
[[ -n $NGINX ]] || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
[[ -x /usr/bin/time ]] && /usr/bin/time -f '%M' true >/dev/null 2>&1 || missing+=(time)
if has_tool aria2c; then command -v aria2c >/dev/null || missing+=(aria2); fi
if ((${#missing[@]})); then
    info "missing: ${missing[*]}; installing from Debian packages"
    SUDO=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
        SUDO=(sudo)
    fi
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$WORK"
    apt_log=$WORK/apt.log
    "${SUDO[@]}" apt-get update -qq >"$apt_log" 2>&1 || die "apt-get update failed: $(tail -n 5 "$apt_log")"
    pkgs=()
    for m in "${missing[@]}"; do
        if [[ $m == nginx ]]; then
            # nginx-light is enough (static files, limit_rate); newer Debian has only nginx.
            policy=$(apt-cache policy nginx-light 2>/dev/null || true)
            if [[ $policy =~ Candidate:\ [0-9] ]]; then
                pkgs+=(nginx-light)
            else
                pkgs+=(nginx)
            fi
        else
            pkgs+=("$m")
        fi
    done
    info "apt-get install ${pkgs[*]}"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$apt_log" 2>&1 ||
        die "apt-get install ${pkgs[*]} failed: $(tail -n 5 "$apt_log")"
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
[[ -x $NGINX ]] || die "nginx not found after install"
info "nginx:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
info "curl:   $(curl --version | head -n1 | cut -d' ' -f1-2)"
if has_tool aria2c; then info "aria2c: $(aria2c --version | head -n1)"; fi

# ---------------------------------------------------------------------------------------------
# 2. Build mdl

MDLD="" MDLCTL=""
if has_tool mdl; then
    target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
    MDLD=$target_dir/release/mdld
    MDLCTL=$target_dir/release/mdlctl
    if [[ ${BENCH_NO_BUILD:-0} == 1 ]]; then
        log "Skipping the build (BENCH_NO_BUILD=1)"
    else
        log "Building mdl (cargo build --release -p mdld -p mdlctl)"
        command -v cargo >/dev/null || die "cargo not found (the Rust toolchain is required)"
        (cd "$ROOT" && cargo build --release -p mdld -p mdlctl) ||
            die "cargo build failed (to benchmark only the others: BENCH_TOOLS=curl,aria2c $0)"
    fi
    [[ -x $MDLD && -x $MDLCTL ]] || die "mdld/mdlctl not found in $target_dir/release"
    info "mdl:    $("$MDLD" --version)"
fi

# ---------------------------------------------------------------------------------------------
# 3. Test data

log "Preparing test data in bench/work/www (kept between runs of this script)"
mkdir -p "$WORK"
if [[ ${BENCH_WWW_TMPFS:-0} == 1 ]] && ! mountpoint -q "$WORK/www"; then
    mkdir -p "$WORK/www"
    mount -t tmpfs -o size=1600m tmpfs "$WORK/www" || die "cannot mount a tmpfs on $WORK/www (root?)"
    rm -f "$WORK/data.json"
    info "test data on a tmpfs ($WORK/www); unmount it with: umount $WORK/www"
fi
quick_flag=()
[[ $QUICK == 1 ]] && quick_flag=(--quick)
python3 "$HELPER" gen-data "$WORK" "${quick_flag[@]}"

# ---------------------------------------------------------------------------------------------
# Cleanup: stop what this script started (by pid) and drop the downloaded copies.

NGINX_PIDFILE=$WORK/nginx/nginx.pid
NGINX_STARTED=0
MDLD_PID=""
SAMPLER_PID=""
stop_pid() { # PID SIGNAL WHAT
    local pid=$1 sig=$2 what=$3 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "warning: $what (pid $pid) did not stop in 10 s; sending KILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}
# Is PID alive and a process of ours: its command line contains MARK (a path under bench/work)?
ours() { # PID MARK
    local cmdline
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$2"* ]]
}
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    trap '' PIPE # the terminal may be gone: still stop everything
    [[ -n $SAMPLER_PID ]] && stop_pid "$SAMPLER_PID" TERM "RSS sampler"
    if [[ -n $MDLD_PID ]]; then
        info "stopping mdld (pid $MDLD_PID)"
        stop_pid "$MDLD_PID" TERM mdld
        wait "$MDLD_PID" 2>/dev/null
        rm -f "$WORK/mdld.pid"
    fi
    if ((NGINX_STARTED)) && [[ -f $NGINX_PIDFILE ]]; then
        local npid
        npid=$(cat "$NGINX_PIDFILE" 2>/dev/null)
        if ours "$npid" "$WORK/nginx/nginx.conf"; then
            info "stopping nginx (pid $npid)"
            stop_pid "$npid" QUIT nginx
        fi
    fi
    rm -rf "$WORK/out"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# ---------------------------------------------------------------------------------------------
# 4. nginx: :PORT_A unthrottled, :PORT_B with limit_rate per connection

log "Starting nginx on 127.0.0.1:$PORT_A (unthrottled) and 127.0.0.1:$PORT_B (limit_rate $CAP_RATE)"
mkdir -p "$WORK/nginx/tmp"
# An nginx left running by an earlier, killed run of this script holds the ports: stop it.
if [[ -f $NGINX_PIDFILE ]] && ours "$(cat "$NGINX_PIDFILE")" "$WORK/nginx/nginx.conf"; then
    info "stopping the nginx left over from an earlier run (pid $(cat "$NGINX_PIDFILE"))"
    stop_pid "$(cat "$NGINX_PIDFILE")" QUIT nginx
fi
rm -f "$NGINX_PIDFILE"
nginx_v=$("$NGINX" -V 2>&1)
temp_paths="client_body_temp_path $WORK/nginx/tmp/body;"
for mod in proxy fastcgi uwsgi scgi; do
    [[ $nginx_v == *--without-http_${mod}_module* ]] || temp_paths+=" ${mod}_temp_path $WORK/nginx/tmp/$mod;"
done
user_line=""
# As root, nginx's workers would run as 'nobody', who may not read bench/work/www.
((EUID == 0)) && user_line="user $(id -un) $(id -gn);"
cat >"$WORK/nginx/nginx.conf" <<EOF
# Generated by bench/run.sh.
$user_line
worker_processes 2;
daemon on;
pid $NGINX_PIDFILE;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    keepalive_timeout 65;
    default_type application/octet-stream;
    $temp_paths
    server {
        listen 127.0.0.1:$PORT_A;
        root $WORK/www;
    }
    server {
        listen 127.0.0.1:$PORT_B;
        root $WORK/www;
        limit_rate $CAP_RATE;
    }
}
EOF
NGINX_STARTED=1
"$NGINX" -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" ||
    die "nginx failed to start (ports $PORT_A/$PORT_B in use? set BENCH_PORT); see $WORK/nginx/error.log"
for ((i = 0; i < 50; i++)); do
    [[ -s $NGINX_PIDFILE ]] && curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT_A/big-1g.bin" &&
        curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT_B/big-1g.bin" && break
    sleep 0.1
done
((i < 50)) || die "nginx does not answer on 127.0.0.1:$PORT_A/$PORT_B; see $WORK/nginx/error.log"
info "nginx pid $(cat "$NGINX_PIDFILE")"

# ---------------------------------------------------------------------------------------------
# 5. mdld

CLK_TCK=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# utime and stime (clock ticks) of a process, all threads: fields 14 and 15 of /proc/PID/stat.
cpu_ticks() {
    local stat fields
    read -r stat <"/proc/$1/stat"
    read -r -a fields <<<"${stat##*) }" # drop "pid (comm) ": comm may hold spaces
    echo "${fields[11]} ${fields[12]}"
}

IDLE_RSS_KIB=0
MDL_HAS_ENSURE=0
if has_tool mdl; then
    log "Starting mdld (max_concurrent = 8, segments = 16)"
    MDL_SOCKET=$WORK/mdld.sock
    if ((${#MDL_SOCKET} > 100)); then # sun_path is 108 bytes
        MDL_SOCKET=$(mktemp -d /tmp/mdl-bench.XXXXXX)/mdld.sock
    fi
    export MDL_SOCKET
    # Never let mdlctl start a daemon of its own behind the benchmark's back.
    export MDL_DAEMON_BIN=/bin/false
    export MDLCTL
    if "$MDLCTL" ensure --help >/dev/null 2>&1; then MDL_HAS_ENSURE=1; fi
    # A daemon left running by an earlier, killed run of this script: stop it.
    if [[ -f $WORK/mdld.pid ]] && ours "$(cat "$WORK/mdld.pid")" "$WORK/mdld-data"; then
        info "stopping the mdld left over from an earlier run (pid $(cat "$WORK/mdld.pid"))"
        stop_pid "$(cat "$WORK/mdld.pid")" TERM mdld
    fi
    rm -rf "$WORK/mdld-data" "$MDL_SOCKET"
    # max_concurrent = 8 gives mdl the same job parallelism as aria2c -j8 / curl --parallel-max 8
    # in the repository case; a single-file job is not affected by it.
    # A large file starts with 16 connections, as aria2c -x16 -s16 gets; mdl adds more (up to
    # its max_segments, 32 by default) while each connection is capped and more bring more
    # throughput (daemon/src/engine/growth.rs). aria2c cannot go past 16 per server.
    printf '# Generated by bench/run.sh.\nmax_concurrent = 8\n[engine]\nsegments = 16\n' >"$WORK/mdld.toml"
    if [[ -n ${BENCH_MDL_ENGINE:-} ]]; then
        tr ';' '\n' <<<"$BENCH_MDL_ENGINE" | sed 's/^ *//' >>"$WORK/mdld.toml"
        info "extra engine settings: $(tr '\n' ' ' <<<"$BENCH_MDL_ENGINE")"
    fi
    "$MDLD" --socket "$MDL_SOCKET" --data-dir "$WORK/mdld-data" --config "$WORK/mdld.toml" \
        >"$WORK/mdld.log" 2>&1 </dev/null &
    MDLD_PID=$!
    echo "$MDLD_PID" >"$WORK/mdld.pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$MDLD_PID" 2>/dev/null || die "mdld exited at start; see $WORK/mdld.log: $(tail -n 5 "$WORK/mdld.log")"
        "$MDLCTL" daemon status >/dev/null 2>&1 && break
        sleep 0.1
    done
    ((i < 100)) || die "mdld does not answer on $MDL_SOCKET; see $WORK/mdld.log"
    sleep 1
    IDLE_RSS_KIB=$(rss_kib "$MDLD_PID")
    info "mdld pid $MDLD_PID, socket $MDL_SOCKET, idle RSS $(calc "$IDLE_RSS_KIB / 1024" | cut -c1-4) MiB"
fi

# ---------------------------------------------------------------------------------------------
# 6. Runs

RAW=$WORK/raw.tsv
printf '# scenario\ttool\trun\tt0\tt1\tbytes\tuser_s\tsys_s\tpeak_rss_kib\tmdl_queue_s\n' >"$RAW"
OUT=$WORK/out
rm -rf "$OUT"
mkdir -p "$OUT"
TIME_FMT='%e %U %S %M'

# The lists for a case: CASE.urls ("URL SHA" for mdl), CASE.sha256 (sha256sum -c, by base
# name), CASE.curl (curl -K config), CASE.aria2 (aria2c -i input), plus its byte total.
make_lists() { # CASE LISTFILE PORT -> prints total bytes
    local case=$1 list=$2 port=$3 path size sha name total=0
    : >"$WORK/$case.urls"
    : >"$WORK/$case.sha256"
    : >"$WORK/$case.curl"
    : >"$WORK/$case.aria2"
    while read -r path size sha; do
        name=${path##*/}
        echo "http://127.0.0.1:$port/$path $sha" >>"$WORK/$case.urls"
        echo "$sha  $name" >>"$WORK/$case.sha256"
        printf 'url = "http://127.0.0.1:%s/%s"\noutput = "%s"\n' "$port" "$path" "$name" >>"$WORK/$case.curl"
        printf 'http://127.0.0.1:%s/%s\n  out=%s\n' "$port" "$path" "$name" >>"$WORK/$case.aria2"
        total=$((total + size))
    done <"$list"
    echo "$total"
}

# Check that DEST holds exactly the case's files with the right sha256 (not timed).
verify_dest() { # CASE DEST WHAT
    python3 "$HELPER" verify "$2" "$WORK/$1.sha256" || die "$3: the downloaded files are wrong (see above)"
}

record() { # scenario tool run t0 t1 bytes user sys rss_kib [mdl_queue_s]
    local IFS=$'\t'
    echo "$*" >>"$RAW"
}

# Time an external command; CPU and peak RSS from GNU time.
run_external() { # SCENARIO TOOL RUN CASE BYTES DEST -- CMD...
    local scenario=$1 tool=$2 run=$3 case=$4 bytes=$5 dest=$6 t0 t1 user sys rss
    shift 7
    rm -rf "$dest"
    mkdir -p "$dest"
    sync
    t0=$(date +%s.%N)
    if ! /usr/bin/time -f "$TIME_FMT" -o "$WORK/time.out" "$@" >"$WORK/$tool.log" 2>&1; then
        die "$tool failed in $scenario run $run: $(tail -n 5 "$WORK/$tool.log")"
    fi
    t1=$(date +%s.%N)
    read -r _ user sys rss < <(tail -n 1 "$WORK/time.out")
    verify_dest "$case" "$dest" "$tool ($scenario run $run)"
    record "$scenario" "$tool" "$run" "$t0" "$t1" "$bytes" "$user" "$sys" "$rss" 0
    info "$(printf '%-15s run %d: %7.2f s  %8.1f MiB/s  CPU %6.2f s  RSS %6.1f MiB' "$tool" "$run" \
        "$(calc "$t1 - $t0")" "$(calc "$bytes / 1048576 / ($t1 - $t0)")" "$(calc "$user + $sys")" "$(calc "$rss / 1024")")"
    rm -rf "$dest"
}

# Time mdl through mdlctl: MODE "add" is `mdlctl add` per file then `mdlctl wait` (mdl_fetch.sh),
# MODE "ensure" is one `mdlctl ensure --wait MANIFEST`. CPU = the daemon's utime+stime delta
# plus the client processes (GNU time); RSS = the daemon's VmRSS sampled every 100 ms.
run_mdl() { # SCENARIO TOOL MODE RUN CASE BYTES DEST
    local scenario=$1 tool=$2 mode=$3 run=$4 case=$5 bytes=$6 dest=$7
    local t0 t1 cu cs u0 s0 u1 s1 rss samples user sys queue_s=0 cmd hwm
    rm -rf "$dest"
    mkdir -p "$dest"
    if [[ $mode == ensure ]]; then
        python3 "$HELPER" manifest "$WORK/$case.urls" "$dest" "$WORK/$case.manifest.json"
        cmd=("$MDLCTL" ensure --wait "$WORK/$case.manifest.json")
    else
        cmd=(bash "$BENCH_DIR/mdl_fetch.sh" "$WORK/$case.urls" "$dest" "$WORK/mdlctl.log")
    fi
    rm -f "$WORK/phases.out"
    kill -0 "$MDLD_PID" 2>/dev/null || die "mdld (pid $MDLD_PID) is no longer running; see $WORK/mdld.log"
    "$MDLCTL" rm --finished >/dev/null
    sync
    # Reset the daemon's peak RSS (VmHWM) so it covers this run alone (Linux >= 4.0).
    echo 5 >"/proc/$MDLD_PID/clear_refs" 2>/dev/null || true
    read -r u0 s0 < <(cpu_ticks "$MDLD_PID")
    python3 "$HELPER" rss-sample "$MDLD_PID" "$WORK/rss.out" &
    SAMPLER_PID=$!
    t0=$(date +%s.%N)
    if ! MDL_FETCH_PHASES=$WORK/phases.out /usr/bin/time -f "$TIME_FMT" -o "$WORK/time.out" \
        "${cmd[@]}" >>"$WORK/mdlctl.log" 2>&1; then
        die "$tool failed in $scenario run $run: $(tail -n 5 "$WORK/mdlctl.log")"
    fi
    t1=$(date +%s.%N)
    read -r u1 s1 < <(cpu_ticks "$MDLD_PID")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MDLD_PID/status")
    kill -TERM "$SAMPLER_PID"
    wait "$SAMPLER_PID" || true
    SAMPLER_PID=""
    read -r rss samples <"$WORK/rss.out"
    ((samples > 0)) || echo "warning: no RSS sample of mdld in $scenario run $run" >&2
    # The peak: VmHWM since the reset, or the sampled maximum if the reset is not supported.
    ((hwm > rss)) && rss=$hwm
    read -r _ cu cs _ < <(tail -n 1 "$WORK/time.out")
    [[ -f $WORK/phases.out ]] && read -r queue_s _ <"$WORK/phases.out"
    user=$(calc "$cu + ($u1 - $u0) / $CLK_TCK")
    sys=$(calc "$cs + ($s1 - $s0) / $CLK_TCK")
    verify_dest "$case" "$dest" "$tool ($scenario run $run)"
    record "$scenario" "$tool" "$run" "$t0" "$t1" "$bytes" "$user" "$sys" "$rss" "$queue_s"
    info "$(printf '%-15s run %d: %7.2f s  %8.1f MiB/s  CPU %6.2f s  RSS %6.1f MiB (CPU: daemon %.2f s, clients %.2f s; adds took %.2f s)' \
        "$tool" "$run" "$(calc "$t1 - $t0")" "$(calc "$bytes / 1048576 / ($t1 - $t0)")" "$(calc "$user + $sys")" "$(calc "$rss / 1024")" \
        "$(calc "($u1 - $u0 + $s1 - $s0) / $CLK_TCK")" "$(calc "$cu + $cs")" "$queue_s")"
    rm -rf "$dest"
}

# One case: every selected tool, RUNS times, interleaved (run 1 of each tool, then run 2...).
run_case() { # SCENARIO CASE BYTES PORT KIND(single|repo)
    local scenario=$1 case=$2 bytes=$3 port=$4 kind=$5 run url name
    url=$(head -n 1 "$WORK/$case.urls" | cut -d' ' -f1)
    name=${url##*/}
    # Dirty pages from generating the data (or from the last case) are written back now, not
    # during somebody's timed run.
    sync
    for ((run = 1; run <= RUNS; run++)); do
        if has_tool mdl; then
            if [[ $kind == repo ]] && ((MDL_HAS_ENSURE)); then
                # A batch: one client, one connection (the preferred way for many files) ...
                run_mdl "$scenario" mdl ensure "$run" "$case" "$bytes" "$OUT/mdl"
                # ... and one `mdlctl add` process per file, as a shell loop would.
                run_mdl "$scenario" mdl-add add "$run" "$case" "$bytes" "$OUT/mdl-add"
            else
                run_mdl "$scenario" mdl add "$run" "$case" "$bytes" "$OUT/mdl"
            fi
        fi
        if has_tool curl && ! [[ $scenario == capped* ]] || { has_tool curl && ((run <= CAPPED_CURL_RUNS)); }; then
            if [[ $kind == single ]]; then
                run_external "$scenario" curl "$run" "$case" "$bytes" "$OUT/curl" -- \
                    curl -sSf -o "$OUT/curl/$name" "$url"
                if [[ $scenario == unthrottled ]]; then
                    local sha
                    sha=$(head -n 1 "$WORK/$case.urls" | cut -d' ' -f2)
                    # curl, then hash the file and compare: what a careful user scripts.
                    run_external "$scenario" curl+sha256sum "$run" "$case" "$bytes" "$OUT/curlsha" -- \
                        sh -c 'curl -sSf -o "$1" "$2" && echo "$3  $1" | sha256sum --quiet --strict -c' \
                        sh "$OUT/curlsha/$name" "$url" "$sha"
                fi
            else
                run_external "$scenario" curl "$run" "$case" "$bytes" "$OUT/curl" -- \
                    sh -c 'cd "$1" && exec curl -sSf -Z --parallel-max 8 -K "$2"' sh "$OUT/curl" "$WORK/$case.curl"
            fi
        fi
        if has_tool aria2c; then
            local common=(-q --file-allocation=none --check-integrity=false --allow-overwrite=true
                --auto-file-renaming=false --summary-interval=0 --console-log-level=warn)
            if [[ $kind == single ]]; then
                run_external "$scenario" aria2c "$run" "$case" "$bytes" "$OUT/aria2c" -- \
                    aria2c "${common[@]}" -x16 -s16 -k1M -d "$OUT/aria2c" "$url"
            else
                run_external "$scenario" aria2c "$run" "$case" "$bytes" "$OUT/aria2c" -- \
                    aria2c "${common[@]}" -j8 -x1 -d "$OUT/aria2c" -i "$WORK/$case.aria2"
            fi
        fi
    done
}

if has_scenario unthrottled; then
    check_quiet "before the case"
    log "1 GiB, unthrottled (127.0.0.1:$PORT_A), $RUNS run(s) per tool"
    bytes=$(make_lists unthrottled "$WORK/big-1g.bin.list" "$PORT_A")
    run_case unthrottled unthrottled "$bytes" "$PORT_A" single
fi
if has_scenario capped; then
    if [[ $QUICK == 1 ]]; then cap_file=big-256m.bin cap_scenario=capped-256m; else cap_file=big-1g.bin cap_scenario=capped; fi
    check_quiet "before the case"
    log "${cap_file%.bin}, $CAP_RATE/s per connection (127.0.0.1:$PORT_B), $RUNS run(s) per tool"
    bytes=$(make_lists capped "$WORK/$cap_file.list" "$PORT_B")
    if has_tool curl; then info "(curl uses one connection: expect about $(awk "BEGIN { printf \"%.0f\", $bytes / 26214400 }") s per run)"; fi
    run_case "$cap_scenario" capped "$bytes" "$PORT_B" single
fi
if has_scenario repo; then
    check_quiet "before the case"
    log "Repository: $(wc -l <"$WORK/repo.list") files (127.0.0.1:$PORT_A), $RUNS run(s) per tool"
    bytes=$(make_lists repo "$WORK/repo.list" "$PORT_A")
    info "($((bytes / 1048576)) MiB in all; mdl max_concurrent = 8, curl --parallel-max 8, aria2c -j8)"
    run_case repo repo "$bytes" "$PORT_A" repo
fi

# The 100k-job store case is bench/store.sh's (it starts its own daemon). Its markdown table is
# copied into the results; the report takes its targets from BENCH_STORE_JSON when store.sh
# writes that file ({"targets": [{"target": ..., "met": true|false|null, "detail": ...}]}),
# else from its output lines that say MET / NOT MET.
rm -f "$WORK/store.md" "$WORK/store.json" "$WORK/store.status"
if has_scenario store; then
    check_quiet "before the case"
    if [[ -x $BENCH_DIR/store.sh || -f $BENCH_DIR/store.sh ]]; then
        log "Store: bench/store.sh (100k jobs), BENCH_RUNS=$RUNS"
        if BENCH_RUNS=$RUNS BENCH_QUICK=$QUICK BENCH_NO_BUILD=1 BENCH_STORE_JSON=$WORK/store.json \
            MDLD=$MDLD MDLCTL=$MDLCTL bash "$BENCH_DIR/store.sh" >"$WORK/store.md" 2>"$WORK/store.log"; then
            echo ok >"$WORK/store.status"
            sed 's/^/    /' "$WORK/store.md" >&2
        else
            echo "failed (exit $?); see $WORK/store.log: $(tail -n 3 "$WORK/store.log" | tr '\n' ' ')" >"$WORK/store.status"
            info "bench/store.sh failed: $(cat "$WORK/store.status")"
        fi
    else
        info "(bench/store.sh does not exist yet: the 100k-job targets are reported as n/a)"
        echo "missing: bench/store.sh does not exist in this checkout" >"$WORK/store.status"
    fi
fi
check_quiet "at the end"

# ---------------------------------------------------------------------------------------------
# 7. Report

versions="nginx $("$NGINX" -v 2>&1 | sed 's/^nginx version: nginx\///'), $(curl --version | head -n1 | cut -d' ' -f1-2)"
if has_tool aria2c; then versions+=", $(aria2c --version | head -n1 | sed 's/ version//')"; fi
if has_tool mdl; then
    versions+=", $("$MDLD" --version)"
    if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        [[ -z $(git -C "$ROOT" status --porcelain -- . ':!bench' 2>/dev/null) ]] || rev+="+uncommitted changes"
        versions+=" (git $rev)"
    fi
fi
python3 - "$WORK/meta.json" "${QUIET_WARNINGS[@]}" <<EOF
import json, sys, datetime, os
json.dump({
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "quick": "$QUICK" == "1",
    "runs": $RUNS,
    "tools": "$TOOLS".split(","),
    "machine": "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)",
    "versions": "$versions",
    "mdld_idle_rss_mib": $IDLE_RSS_KIB / 1024,
    "cap_rate": "$CAP_RATE/s per connection",
    "elapsed_s": $(($(date +%s) - BENCH_T0)),
    "quiet_warnings": sys.argv[2:],
}, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$HELPER" report "$WORK"
print_quiet_warnings
