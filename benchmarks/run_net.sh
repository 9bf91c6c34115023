#!/usr/bin/env bash
# run_net.sh: fiberio's network benchmarks (see benchmarks/README.md and RESULTS.md "## Network").
#
#   benchmarks/run_net.sh BUILD_DIR [OUT_DIR]
#
# Builds nothing: BUILD_DIR must already contain benchmarks/{loadgen,raw_epoll_echo,fiberio_echo}
# and demos/{echo_server,blocking_echo_server,fib_server} (a missing program's rows say so).
# Every server is pinned to core 0 and the load generator to core 1 (taskset). For each model and
# connection count a fresh server is started, loadgen runs a closed-loop ping-pong against it
# (WARMUP s uncounted, then DURATION s measured) and reads the server's CPU time (the whole process
# tree: threads and forked children) at both ends of the measured window, then the server is stopped.
# Each point is run REPEAT times, in rounds that interleave the models, and the run with the median
# requests per server-CPU-second is reported (the same for every model: it damps interference from
# other work on this machine, whichever way it pushes).
#
# The ping-pong table is followed by the same ratios paired by round (paired_ratios.sh), which damps
# slow drifts in this machine's speed better than ratios of medians.
# Then: RSS per idle connection (each of IDLE_MODELS with IDLE_CONNS idle clients vs none), and seed 000's
# starvation test (fib_server: a "1" request loop alone, then while another client loops fib(HOG_N)).
#
# Environment knobs (defaults in brackets): DURATION [2] WARMUP [1] REPEAT [3] CONNS ["1 50 1000 10000"]
# MODELS ["raw-level raw-edge fiberio shims echo-fiber thread threadpool process prefork"]
# IDLE_CONNS [10000] IDLE_MODELS ["fiberio shims echo-fiber thread"] HOG_N [32] PROBE_DURATION [2] PROBE_REPEAT [3] BASE_PORT [19100]
# Everything is bounded: each server start waits at most 10 s for its port, each loadgen run has
# its own deadlines, each server gets 5 s to exit after SIGTERM before SIGKILL.
set -u -o pipefail

if [[ $# -lt 1 || ! -d $1 ]]; then
  echo "usage: $0 BUILD_DIR [OUT_DIR]" >&2
  exit 2
fi
BUILD=$(cd "$1" && pwd)
OUT=${2:-$BUILD/bench-net-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
LOG=$OUT/raw.log
: >"$LOG"

DURATION=${DURATION:-2}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-"1 50 1000 10000"}
MODELS=${MODELS:-"raw-level raw-edge fiberio shims echo-fiber thread threadpool process prefork"}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_MODELS=${IDLE_MODELS:-"fiberio shims echo-fiber thread"}
HOG_N=${HOG_N:-32}
PROBE_DURATION=${PROBE_DURATION:-2}
PROBE_REPEAT=${PROBE_REPEAT:-3}
PORT=${BASE_PORT:-19100}
SERVER_CORE=0
CLIENT_CORE=1

LOADGEN=$BUILD/benchmarks/loadgen
[[ -x $LOADGEN ]] || { echo "run_net.sh: $LOADGEN is missing (build the 'loadgen' target)" >&2; exit 2; }
command -v taskset >/dev/null || { echo "run_net.sh: taskset (util-linux) is required" >&2; exit 2; }
command -v setsid >/dev/null || { echo "run_net.sh: setsid (util-linux) is required" >&2; exit 2; }

# 10,000 connections need 10,000 fds on each side: take the hard limit (servers and loadgen inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
if (( $(ulimit -n) < 10100 )); then
  echo "run_net.sh: warning: RLIMIT_NOFILE is $(ulimit -n); 10,000-connection runs will fail" >&2
fi

started=$(date +%s)
log() { echo "$*" >&2; echo "# $*" >>"$LOG"; }

# Pools as in seed 004 serve one connection per worker until it closes, so a closed-loop run with C
# connections needs C workers; echo_server accepts at most this many.
MAX_POOL=256

# model_cmd MODEL PORT CONNS: the command line of a model.
model_cmd() {
  local model=$1 port=$2 conns=${3:-1}
  case $model in
    raw-level) echo "$BUILD/benchmarks/raw_epoll_echo --port $port --trigger level" ;;
    raw-edge) echo "$BUILD/benchmarks/raw_epoll_echo --port $port --trigger edge" ;;
    fiberio) echo "$BUILD/benchmarks/fiberio_echo --port $port" ;;
    shims) echo "$BUILD/demos/blocking_echo_server --port $port" ;;
    echo-fiber) echo "$BUILD/demos/echo_server --model=fiber --port $port --quiet" ;;
    thread | process) echo "$BUILD/demos/echo_server --model=$model --port $port --quiet" ;;
    threadpool | prefork) echo "$BUILD/demos/echo_server --model=$model --port $port --workers $conns --quiet" ;;
    fib-fiber) echo "$BUILD/demos/fib_server --model=fiber --port $port" ;;
    fib-offload) echo "$BUILD/demos/fib_server --model=fiber --offload --port $port" ;;
    *) return 1 ;;
  esac
}

# True if something listens on TCP port $1 (IPv4 or IPv6), from /proc/net/tcp{,6}.
listening() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

SERVER_PID=
# start_server MODEL [CORES] [CONNS]: starts MODEL on a fresh port in its own session (so stop_server
# can signal its whole process group) and waits for the port. Sets SERVER_PID and SERVER_PORT.
start_server() {
  local model=$1 cores=${2:-$SERVER_CORE} conns=${3:-1} cmd bin i
  cmd=$(model_cmd "$model" 0 "$conns") || return 1
  bin=${cmd%% *}
  [[ -x $bin ]] || { log "$model: $bin not built"; return 1; }
  for ((i = 0; i < 50; i++)); do
    PORT=$((PORT + 1))
    listening "$PORT" || break
  done
  SERVER_PORT=$PORT
  cmd=$(model_cmd "$model" "$SERVER_PORT" "$conns")
  # setsid execs directly (this background child is not a group leader), so $! is the server itself.
  setsid taskset -c "$cores" $cmd >>"$OUT/server-$model.log" 2>&1 &
  SERVER_PID=$!
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$model: server exited at start (see $OUT/server-$model.log)"
      SERVER_PID=
      return 1
    fi
    listening "$SERVER_PORT" && return 0
    sleep 0.1
  done
  log "$model: port $SERVER_PORT not listening after 10 s"
  stop_server
  return 1
}

# Stops the server and everything in its process group (forked children): SIGTERM, 5 s, SIGKILL.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local i
  kill -TERM -- "-$SERVER_PID" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 -- "-$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$SERVER_PID" 2>/dev/null; then
    log "server $SERVER_PID did not exit within 5 s of SIGTERM: SIGKILL"
    kill -KILL -- "-$SERVER_PID" 2>/dev/null
  fi
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

# kv KEY LINE: the value of KEY in loadgen's key=value line.
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# loadgen ARGS...: runs loadgen on the client core; prints its result line (empty if it printed none).
loadgen() {
  local line
  line=$(taskset -c "$CLIENT_CORE" "$LOADGEN" "$@" 2>>"$OUT/loadgen.err" | tail -n 1)
  echo "$line" >>"$LOG"
  echo "$line"
}

# Connect timeout for C connections: generous for thread/process-per-connection servers.
connect_timeout() { echo $((30 + $1 / 200)); }

declare -A RUNS    # "model conns" -> loadgen lines, one per run
declare -A RESULT  # "model conns" -> the median run's line
declare -A SKIPPED # "model conns" -> why it was not run
declare -A DONE    # "model conns" -> 1 once repeating it is pointless

# measure_once MODEL CONNS: one fresh server, one loadgen run; appends loadgen's line to RUNS.
measure_once() {
  local model=$1 c=$2 line
  [[ -z ${SKIPPED["$model $c"]:-} ]] || return 0
  if [[ $model == threadpool || $model == prefork ]] && ((c > MAX_POOL)); then
    SKIPPED["$model $c"]="pool of one connection per worker, at most $MAX_POOL workers: cannot hold $c connections"
    log "ping-pong: $model, $c connections: skipped (${SKIPPED["$model $c"]})"
    return 0
  fi
  log "ping-pong: $model, $c connections"
  start_server "$model" "$SERVER_CORE" "$c" || { SKIPPED["$model $c"]="server did not start"; return 1; }
  line=$(loadgen --port "$SERVER_PORT" --connections "$c" --duration "$DURATION" --warmup "$WARMUP" \
    --connect-timeout "$(connect_timeout "$c")" --server-pid "$SERVER_PID")
  stop_server
  [[ -n $line ]] || return 1
  RUNS["$model $c"]+="$line"$'\n'
  # A run that could not establish every connection will not do better when repeated.
  [[ $(kv established "$line") == "$c" ]] || DONE["$model $c"]=1
}

# median_run MODEL CONNS: the run with the median requests per server-CPU-second (the lower middle
# one for an even count). The median, not the best: outside load can also flatter a run (at 1
# connection a busy core 0 spares the server the idle-exit cost of every wake-up).
median_run() {
  local runs=${RUNS["$1 $2"]:-}
  [[ -n $runs ]] || return 0
  local n
  n=$(grep -c . <<<"$runs")
  grep . <<<"$runs" | while read -r l; do echo "$(kv req_per_cpu_s "$l") $l"; done | sort -g |
    sed -n "$(((n + 1) / 2))p" | cut -d' ' -f2-
}

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $load: other work shares these 2 cores, so the numbers below will be noisy"
fi
log "settings: DURATION=$DURATION WARMUP=$WARMUP REPEAT=$REPEAT CONNS='$CONNS'; server on core $SERVER_CORE, loadgen on core $CLIENT_CORE; output in $OUT"

# Rounds interleave the models (every model once per round, at one connection count), so a burst of
# outside load hits neighbouring models alike instead of one model's every repeat.
for c in $CONNS; do
  for ((r = 0; r < REPEAT; r++)); do
    for model in $MODELS; do
      [[ -z ${DONE["$model $c"]:-} ]] || continue
      measure_once "$model" "$c"
    done
  done
done

for key in "${!RUNS[@]}"; do RESULT["$key"]=$(median_run ${key% *} ${key#* }); done

# ---- the ping-pong table ----
fmt_row() {
  local model=$1 c=$2 line=${RESULT["$1 $2"]:-} ref=$3
  if [[ -z $line ]]; then
    printf '| %s | %s | — | — | — | — | — | not run: %s |\n' "$model" "$c" "${SKIPPED["$1 $2"]:-loadgen printed no result}"
    return
  fi
  local est rps p50 p99 rpc err note="" ratio="—"
  est=$(kv established "$line"); rps=$(kv rps "$line"); p50=$(kv p50_us "$line"); p99=$(kv p99_us "$line")
  rpc=$(kv req_per_cpu_s "$line"); err=$(kv errors "$line")
  [[ $est == "$c" ]] || note="only $est of $c connections established"
  [[ $err == 0 ]] || note="${note:+$note; }$err errors"
  if [[ -n $ref && -n $rpc ]]; then ratio=$(awk -v a="$rpc" -v b="$ref" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'); fi
  printf '| %s | %s | %.0f | %.0f | %.0f | %.0f | %s | %s |\n' "$model" "$c" "$rps" "$p50" "$p99" "$rpc" "$ratio" "$note"
}

{
  echo
  echo "### Ping-pong ($((DURATION)) s measured after $WARMUP s warm-up, 33-byte lines, median of $REPEAT runs by req/CPU-s)"
  echo
  echo "ratio = requests per server-CPU-second / the better of raw-level and raw-edge at the same connection count."
  echo
  echo "| model | conns | req/s | p50 µs | p99 µs | req per server-CPU-s | ratio to raw | notes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  for model in $MODELS; do
    for c in $CONNS; do
      ref=""
      for raw in raw-level raw-edge; do
        l=${RESULT["$raw $c"]:-}
        [[ -n $l ]] || continue
        v=$(kv req_per_cpu_s "$l")
        if [[ -z $ref ]] || awk -v a="$v" -v b="$ref" 'BEGIN { exit !(a > b) }'; then ref=$v; fi
      done
      fmt_row "$model" "$c" "$ref"
    done
  done
} | tee "$OUT/pingpong.md"
{
  echo
  echo "### Paired by round: each run's ratio to the better raw server of the same round"
  echo
  "$(dirname "$0")/paired_ratios.sh" "$LOG"
} | tee "$OUT/paired.md"

# ---- RSS per idle connection ----
{
  echo
  echo "### RSS per idle connection ($IDLE_CONNS idle clients, each after one exchange; VmRSS of the server's process tree)"
  echo
  echo "| model | idle conns established | VmRSS with 0 | VmRSS with $IDLE_CONNS | per connection |"
  echo "|---|---:|---:|---:|---:|"
  for model in $IDLE_MODELS; do
    log "idle: $model, $IDLE_CONNS connections"
    if ! start_server "$model" "$SERVER_CORE" "$IDLE_CONNS"; then
      echo "| $model | not run: server did not start | | | |"
      continue
    fi
    line=$(loadgen --idle --port "$SERVER_PORT" --connections "$IDLE_CONNS" --duration 3 --settle 1 \
      --connect-timeout "$(connect_timeout "$IDLE_CONNS")" --server-pid "$SERVER_PID")
    stop_server
    if [[ -z $line ]]; then
      echo "| $model | not run: loadgen printed no result | | | |"
      continue
    fi
    b=$(kv bytes_per_conn "$line")
    printf '| %s | %s | %s KiB | %s KiB | %s bytes (%s KiB) |\n' "$model" "$(kv established "$line")" \
      "$(kv rss0_kb "$line")" "$(kv rss_idle_kb "$line")" "$b" "$(awk -v b="$b" 'BEGIN { printf "%.2f", b / 1024 }')"
  done
} >"$OUT/idle.md"
cat "$OUT/idle.md"

# ---- starvation (seed 000) ----
# probe MODEL CORES HOG: sets PROBE to loadgen's rate-probe line (HOG -1 = the probe alone).
probe() {
  local model=$1 cores=$2 hog=$3
  PROBE=""
  start_server "$model" "$cores" || return 1
  if [[ $hog -ge 0 ]]; then
    PROBE=$(loadgen --rate-probe --port "$SERVER_PORT" --duration "$PROBE_DURATION" --warmup 1 --hog "$hog" --timeout 30)
  else
    PROBE=$(loadgen --rate-probe --port "$SERVER_PORT" --duration "$PROBE_DURATION" --warmup 1)
  fi
  stop_server
  [[ -n $PROBE ]]
}

{
  echo
  echo "### Starvation (seed 000): \"1\" requests/s on one connection, alone vs while another client loops fib($HOG_N)"
  echo
  echo "Each row: the median of $PROBE_REPEAT (alone, under hog) pairs by ratio; the last column lists every pair's ratio."
  echo
  echo "| server | server cores | alone req/s | under hog req/s | ratio | probe p99 µs under hog | hog fib($HOG_N) replies/s | all ratios |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for model in fib-fiber fib-offload; do
    for cores in "$SERVER_CORE" "0,1"; do
      rows=""
      for ((r = 0; r < PROBE_REPEAT; r++)); do
        log "starvation: $model on cores $cores, round $((r + 1))"
        probe "$model" "$cores" -1 || continue
        alone=$PROBE
        probe "$model" "$cores" "$HOG_N" || continue
        hogged=$PROBE
        a=$(kv rps "$alone"); h=$(kv rps "$hogged")
        ratio=$(awk -v a="$a" -v h="$h" 'BEGIN { printf "%.3f", (a > 0 ? h / a : 0) }')
        rows+="$ratio $a $h $(kv p99_us "$hogged") $(awk -v n="$(kv hog_replies "$hogged")" -v s="$(kv seconds "$hogged")" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')"$'\n'
      done
      n=$(grep -c . <<<"$rows")
      if ((n == 0)); then
        echo "| $model | $cores | not run (see $OUT) | | | | | |"
        continue
      fi
      all=$(grep . <<<"$rows" | cut -d' ' -f1 | paste -sd' ')
      grep . <<<"$rows" | sort -g | sed -n "$(((n + 1) / 2))p" | {
        read -r ratio a h p99 hog
        printf '| %s | %s | %.0f | %.0f | %s | %.0f | %s | %s |\n' "$model" "$cores" "$a" "$h" "$ratio" "$p99" "$hog" "$all"
      }
    done
  done
} >"$OUT/starvation.md"
cat "$OUT/starvation.md"

log "total runtime: $(($(date +%s) - started)) s; raw loadgen lines in $LOG"
