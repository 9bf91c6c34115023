#!/usr/bin/env bash
# callgrind_echo.sh: user-space instructions per request of an echo server, counted exactly by
# valgrind's callgrind (deterministic, unlike timings on this shared machine).
#
#   benchmarks/callgrind_echo.sh BUILD_DIR SERVER_COMMAND...     (the command gets "--port P" appended)
#
# Starts the server under callgrind with instrumentation off, warms it up with 5,000 requests on 50
# connections, counts only while loadgen then sends 20,000 more, and prints total instructions, the
# number of send()/write() calls (one reply each) and their ratio, then callgrind's top functions.
# Example: benchmarks/callgrind_echo.sh build build/benchmarks/fiberio_echo
set -u -o pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 BUILD_DIR SERVER_COMMAND..." >&2; exit 2; }
BUILD=$1
shift
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "callgrind_echo.sh: valgrind is required" >&2; exit 2; }
PORT=${PORT:-19777}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.%p" "$@" --port "$PORT" \
  >"$OUT/server.log" 2>&1 &
VPID=$!
for ((i = 0; i < 100; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
taskset -c 1 "$BUILD/benchmarks/loadgen" --port "$PORT" --connections 50 --requests 5000 --timeout 60 >/dev/null
callgrind_control -i on "$VPID" >/dev/null 2>&1
taskset -c 1 "$BUILD/benchmarks/loadgen" --port "$PORT" --connections 50 --requests 20000 --timeout 60 >/dev/null
callgrind_control -i off "$VPID" >/dev/null 2>&1
kill -TERM "$VPID"
wait "$VPID"
f=$(ls "$OUT"/cg.* | head -1)
total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
# One reply per request: count the calls of libc's send and write (their callers' "(Nx)" counts).
replies=$(callgrind_annotate --tree=caller "$f" 2>/dev/null | awk '
  /^ *$/ { block = 0; next }
  / < / && match($0, /\(([0-9,]+)x\)/) { c = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", c); block += c; next }
  / \* / && /sysv\/linux\/(send|write)\.c:(send|write) / { n += block }
  { block = 0 }
  END { print n + 0 }')
echo "instructions=$total replies=$replies instructions_per_request=$((total / (replies > 0 ? replies : 1)))"
callgrind_annotate "$f" 2>/dev/null | sed -n '/file:function/,$p' | sed -n 2,21p | cut -c1-160
