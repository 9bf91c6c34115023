#!/bin/sh
# The main demo (README, first command): the seed lessons, measured live on loopback.
#   1. seed 003's counter race between greenlets, and its fix with fiberio::Lock;
#   2. seed 000's Fibonacci server on one fiber hub serving 1,000 concurrent clients;
#   3. seed 000's starvation: a fib(44) hog vs the req/s meter, without and with --offload.
# Usage: sh scripts/demo.sh [build-dir]     (default: build)
set -eu
B=${1:-build}/demos
for p in race_counter fib_server fiber_client; do
  [ -x "$B/$p" ] || { echo "demo.sh: $B/$p is missing: build first (cmake --build build)"; exit 1; }
done
server=""
cleanup() { [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

start_fib() { # start fib_server with extra args on a free port; sets $server and $port
  out=$(mktemp)
  "$B/fib_server" --port 0 "$@" >"$out" 2>&1 &
  server=$!
  i=0
  while ! grep -q "listening on" "$out"; do i=$((i+1)); [ $i -lt 100 ] || { cat "$out"; exit 1; }; sleep 0.05; done
  port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$out" | head -n1)
}
stop_fib() { kill -TERM "$server"; wait "$server" || true; server=""; }

echo "== 1. seed 003: the counter race between greenlets (no sockets)"
"$B/race_counter"
"$B/race_counter" --lock
echo
echo "== 2. seed 000: fib_server (fiber model), 1,000 concurrent clients, one thread"
start_fib
"$B/fiber_client" --port "$port" -c 1000 --line 25 | tail -n 1
echo
echo "== 3. seed 000: a client asking fib(44) vs the req/s meter (4 s each)"
echo "-- without --offload: the hog holds the hub, the meter starves"
( sleep 1; "$B/fiber_client" --port "$port" --line 44 >/dev/null ) &
hog=$!
"$B/fiber_client" --port "$port" --rate --duration 4 --line 1
wait "$hog"
stop_fib
echo "-- with --offload: fib(44) runs on the thread pool, the meter keeps its rate"
start_fib --offload
( sleep 1; "$B/fiber_client" --port "$port" --line 44 >/dev/null ) &
hog=$!
"$B/fiber_client" --port "$port" --rate --duration 4 --line 1
wait "$hog"
stop_fib
echo
echo "demo done: see README.md and docs/demos.md for every demo and model."
