#!/bin/sh
# TLS sessions per second (connect + handshake + 1 KiB round trip + close) against fiberio's TLS
# StreamServer (one hub) and a blocking thread-per-connection OpenSSL server, side by side in one run.
# Server pinned to CPU 0, the fiberio load generator (tls_echo client) to CPU 1.
#   sh benchmarks/tls_echo.sh <build dir> [conns] [seconds]
set -eu
build=$1; conns=${2:-50}; secs=${3:-5}
bin=$build/benchmarks/tls_echo
work=$(mktemp -d); pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086
openssl req -x509 $ec -keyout "$work/ca.key" -out "$work/ca.pem" -days 1 -subj "/CN=bench CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
# shellcheck disable=SC2086
openssl req -new $ec -keyout "$work/key.pem" -out "$work/csr.pem" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' > "$work/ext"
openssl x509 -req -in "$work/csr.pem" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -out "$work/cert.pem" -days 1 -extfile "$work/ext" 2>/dev/null
# The server's CPU time (utime+stime of all its threads, /proc/PID/stat) around the client's run: the
# load generator shares the work (each session is a handshake on both sides), so sessions per server
# CPU-second is the figure to compare.
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
port=18443
for model in fiber thread; do
  taskset -c 0 "$bin" server --model $model --port $port --cert "$work/cert.pem" --key "$work/key.pem" &
  pid=$!
  sleep 0.5
  cpu0=$(cpu_ticks $pid)
  out=$(taskset -c 1 "$bin" client --port $port --ca "$work/ca.pem" --conns "$conns" --seconds "$secs")
  cpu1=$(cpu_ticks $pid)
  sessions=$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($i == "sessions") print $(i + 1)}')
  per_cpu=$(awk -v n="${sessions:-0}" -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", (t > 0 ? n / (t / hz) : 0) }')
  echo "$model: $out server_cpu_s $(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }') sessions_per_server_cpu_s $per_cpu"
  kill $pid; wait $pid 2>/dev/null || true; pid=""
  port=$((port + 1))
done
