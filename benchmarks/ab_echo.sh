#!/usr/bin/env bash
# ab_echo.sh: A/B comparison of echo servers (e.g. two builds of fiberio) on this shared machine.
#
#   benchmarks/ab_echo.sh BUILD_DIR CONNS ROUNDS REF NAME=COMMAND...
#
# Each round starts every NAME's COMMAND (plus "--port P") pinned to core 0, drives it with
# BUILD_DIR/benchmarks/loadgen pinned to core 1 (CONNS connections, DURATION s after WARMUP s), and
# stops it; rounds interleave the servers, so outside load hits neighbours alike. Prints each
# server's requests per server-CPU-second divided by REF's of the same round: the median over the
# rounds, and every round's ratio. Example (the prefetch experiment in RESULTS.md):
#
#   benchmarks/ab_echo.sh build 10000 4 raw-edge "raw-edge=build/benchmarks/raw_epoll_echo --trigger edge" \
#       nopf=/tmp/build-nopf/benchmarks/fiberio_echo new=build/benchmarks/fiberio_echo
set -u -o pipefail
if [[ $# -lt 5 ]]; then
  echo "usage: $0 BUILD_DIR CONNS ROUNDS REF NAME=COMMAND..." >&2
  exit 2
fi
BUILD=$1 CONNS=$2 ROUNDS=$3 REF=$4
shift 4
LOADGEN=$BUILD/benchmarks/loadgen
[[ -x $LOADGEN ]] || { echo "ab_echo.sh: $LOADGEN is missing" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null
PORT=${BASE_PORT:-19500}
results=""
for ((r = 1; r <= ROUNDS; r++)); do
  for spec in "$@"; do
    name=${spec%%=*} cmd=${spec#*=}
    PORT=$((PORT + 1))
    # shellcheck disable=SC2086  # COMMAND is a command line
    setsid taskset -c 0 $cmd --port "$PORT" >/dev/null 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    out=$(taskset -c 1 "$LOADGEN" --port "$PORT" --connections "$CONNS" --duration "${DURATION:-2}" \
          --warmup "${WARMUP:-1}" --timeout 60 --server-pid "$pid" 2>/dev/null)
    kill -TERM -- "-$pid" 2>/dev/null
    for ((i = 0; i < 50 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); i++)); do sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    v=$(grep -o 'req_per_cpu_s=[0-9.]*' <<<"$out" | cut -d= -f2)
    echo "round $r $name ${v:-failed}" >&2
    results+="$r $name ${v:-0}"$'\n'
  done
done
awk -v ref="$REF" '
  NF == 3 { v[$1, $2] = $3; if (!($2 in seen)) { seen[$2] = 1; names[++n] = $2 } if ($1 > rounds) rounds = $1 }
  END {
    for (i = 1; i <= n; i++) {
      k = 0; list = ""
      for (r = 1; r <= rounds; r++)
        if (v[r, ref] > 0 && v[r, names[i]] > 0) { a[++k] = v[r, names[i]] / v[r, ref]; list = list sprintf(" %.2f", a[k]) }
      for (x = 2; x <= k; x++) { t = a[x]; for (y = x - 1; y >= 1 && a[y] > t; y--) a[y + 1] = a[y]; a[y + 1] = t }
      med = k ? ((k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2) : 0
      printf "%-12s median %.3f of %s; rounds:%s\n", names[i], med, ref, list
    }
  }' <<<"$results"
