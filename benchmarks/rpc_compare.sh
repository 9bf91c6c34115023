#!/bin/sh
# Seed 002's comparison of RPC servers: the same protocol and functions (demos/rpc/) served by an
# epoll state machine with callbacks, by a thread per connection, and by fiberio greenlets, loaded by
# `rpc_client bench` (N greenlet clients calling func1(1, 2, 3) back to back) at 1, 50 and 1,000
# clients. The server runs on core 0, the load on core 1; each cell runs SECONDS (default 5) after all
# clients connected. Prints a Markdown table: requests/s, requests per second of the server's CPU time
# (steadier than req/s on a shared machine), p50 and p99 latency, the server's peak RSS
# and its thread count mid-run, and each server's lines of code (serve_*.cpp without blank and comment lines).
# Loopback port 20200.
#   sh benchmarks/rpc_compare.sh [BUILD_DIR] [SECONDS]
set -eu
B=${1:-build}
S=${2:-5}
SRC=$(dirname "$0")/../demos/rpc
ulimit -n 8192
port=20200
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }  # the server's user+system CPU, all threads
loc() { grep -v -E '^\s*(//.*)?$' "$SRC/serve_$1.cpp" | wc -l; }
echo "| server | lines | clients | req/s | req per server CPU-s | p50 µs | p99 µs | server peak RSS MiB | server threads |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for model in epoll threads fiber; do
  for clients in 1 50 1000; do
    taskset -c 0 "$B/demos/rpc_server" --model $model --port $port >/dev/null 2>&1 &
    server=$!
    sleep 0.3
    cpu0=$(cpu_ticks $server)
    taskset -c 1 "$B/demos/rpc_client" --port $port bench --clients $clients --seconds "$S" >/tmp/rpc_compare.$$ &
    load=$!
    sleep "$(echo "$S" | awk '{print $1 / 2 + 0.5}')"
    threads=$(awk '/^Threads:/ {print $2}' /proc/$server/status)  # mid-run
    wait $load || true
    cpu1=$(cpu_ticks $server)
    out=$(cat /tmp/rpc_compare.$$)
    rm -f /tmp/rpc_compare.$$
    rss=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' /proc/$server/status)
    kill -INT $server
    wait $server || true
    rate=$(echo "$out" | sed -n 's/.*req_per_s=\([0-9]*\).*/\1/p')
    p50=$(echo "$out" | sed -n 's/.*p50_us=\([0-9]*\).*/\1/p')
    p99=$(echo "$out" | sed -n 's/.*p99_us=\([0-9]*\).*/\1/p')
    errors=$(echo "$out" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
    [ "$errors" = 0 ] || { echo "rpc_compare: $model at $clients clients: $out" >&2; exit 1; }
    total=$(echo "$out" | sed -n 's/.*requests=\([0-9]*\).*/\1/p')
    per_cpu=$(awk -v n="$total" -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", (t > 0 ? n / (t / hz) : 0) }')
    echo "| $model | $(loc $model) | $clients | $rate | $per_cpu | $p50 | $p99 | $rss | $threads |"
  done
done
