#!/bin/sh
# Seed 001's load.sh: 10 concurrent curl requests, each printing its start time, the reply and its
# end time (second resolution, as the seed). Against http_server (demos/http_server.cpp):
#   build/demos/http_server --model=sync --port 8000 &     # or --model=fiber
#   sh scripts/load.sh /cpu_task                             # or /io, /hello (the default)
# Optional second argument: the base URL (default http://127.0.0.1:8000). Loopback only.
set -eu
path=${1:-/hello}
base=${2:-http://127.0.0.1:8000}
case "$base" in
  http://127.*|http://localhost*|http://\[::1\]*) ;;
  *) echo "load.sh: $base is not a loopback address" >&2; exit 2 ;;
esac
command -v curl >/dev/null || { echo "load.sh: curl is not installed (sh scripts/setup.sh installs it)" >&2; exit 2; }
perform_request() {
  echo "Start time: $(date +"%Y-%m-%d %H:%M:%S")"
  curl -w "\n" -s --max-time 120 "$base$path"
  echo "End time: $(date +"%Y-%m-%d %H:%M:%S")"
}
for i in 1 2 3 4 5 6 7 8 9 10; do
  perform_request &
done
wait
