#!/bin/sh
# What --offload costs the big request (README "fib_server: the collapse and --offload"): fib(40)
# through `fib_server --offload`, alone and while seed 000's req/s meter keeps the hub busy, with the
# thread pool at its default priority (background: SCHED_IDLE) and at normal. The server (hub and pool
# threads) runs on core 0, the clients on core 1. Loopback port 25100; about 20 s.
#   sh benchmarks/offload_cost.sh [BUILD_DIR]
set -eu
B=${1:-build}
for prio in background normal; do
  FIBERIO_THREADPOOL_PRIORITY=$prio taskset -c 0 "$B/demos/fib_server" --model=fiber --offload --port 25100 >/dev/null 2>&1 &
  server=$!
  sleep 0.5
  alone=$(taskset -c 1 "$B/demos/fiber_client" --port 25100 --line 40 | grep -o 'took [0-9]* ms')
  taskset -c 1 "$B/demos/fiber_client" --port 25100 --rate --duration 8 >/tmp/offload_meter.$$ 2>&1 &
  meter=$!
  sleep 2
  busy=$(taskset -c 1 "$B/demos/fiber_client" --port 25100 --line 40 | grep -o 'took [0-9]* ms')
  wait $meter
  kill -INT $server
  wait $server || true
  echo "pool $prio: fib(40) alone $alone; while the meter runs $busy; meter: $(tail -1 /tmp/offload_meter.$$)"
  rm -f /tmp/offload_meter.$$
done
