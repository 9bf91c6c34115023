#!/bin/sh
# "hello" over HTTP/1.1 keep-alive, loaded by wrk: fiberio::http (benchmarks/http_hello.cpp), nginx
# (Debian's nginx-light, 1 worker, `return 200 "hello"`), Go's net/http (benchmarks/http_hello.go,
# GOMAXPROCS=1, built here) and gevent's pywsgi (benchmarks/http_hello_gevent.py, Debian's
# python3-gevent under /usr/bin/python3), at 50 and 1,000 connections. Servers run on core 0, wrk on
# core 1 (one thread). Prints a Markdown table: requests/s, and requests per second of the server's
# CPU time (utime+stime from /proc/PID/stat before and after the run: steadier than req/s on a shared
# machine), and wrk's error/non-2xx counts. Loopback port 20300. Needs wrk, nginx, go (scripts/setup.sh).
#   sh benchmarks/http_compare.sh [BUILD_DIR] [SECONDS]
set -eu
B=${1:-build}
S=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
ulimit -n 8192
port=20300
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }

GOCACHE="$tmp/gocache" GOPATH="$tmp/gopath" go build -o "$tmp/http_hello_go" "$HERE/http_hello.go"
cat >"$tmp/nginx.conf" <<EOC
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  server { listen 127.0.0.1:$port backlog=4096; location / { default_type text/plain; return 200 "hello"; } }
}
EOC

start() {
  case $1 in
    fiberio) taskset -c 0 "$B/benchmarks/http_hello" $port >/dev/null 2>&1 & ;;
    nginx) taskset -c 0 nginx -c "$tmp/nginx.conf" -p "$tmp" >/dev/null 2>&1 & ;;
    go) GOMAXPROCS=1 taskset -c 0 "$tmp/http_hello_go" $port >/dev/null 2>&1 & ;;
    gevent) taskset -c 0 /usr/bin/python3 "$HERE/http_hello_gevent.py" $port >/dev/null 2>&1 & ;;
  esac
  server=$!
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  # nginx's master forks its one worker: measure the worker, which serves (the master sleeps).
  if [ "$1" = nginx ]; then server=$(pgrep -P "$(cat "$tmp/nginx.pid")"); fi
}
stop() {
  if [ "$1" = nginx ]; then kill -QUIT "$(cat "$tmp/nginx.pid")"; else kill -TERM $server 2>/dev/null || true; fi  # TERM: a &-started job ignores SIGINT
  wait 2>/dev/null || true
  sleep 0.3
}

echo "| server | connections | req/s | req per server CPU-s | wrk errors | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
for conns in 50 1000; do
  for srv in fiberio nginx go gevent; do
    start $srv
    cpu0=$(cpu_ticks $server)
    taskset -c 1 wrk -t1 -c$conns -d${S}s "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 || true
    cpu1=$(cpu_ticks $server)
    stop $srv
    total=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$tmp/wrk.out")
    rate=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$tmp/wrk.out")
    errors=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1+\2+\3+\4/p' "$tmp/wrk.out")
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$tmp/wrk.out")
    per_cpu=$(awk -v n="${total:-0}" -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", (t > 0 ? n / (t / hz) : 0) }')
    echo "| $srv | $conns | ${rate%.*} | $per_cpu | ${errors:-0} | ${non2xx:-0} |"
  done
done
