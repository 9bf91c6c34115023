#!/bin/sh
# Builds the libFuzzer harnesses (fuzz/) with clang in build-fuzz/ and runs each for SECONDS (default
# 30) on a copy of its seed corpus (fuzz/corpus/NAME), two at a time, all four under ASan+UBSan. A crash, a hang (10 s per input) or a memory
# blow-up (1 GiB) fails the script, with the input saved in build-fuzz/crashes/NAME/.
#   sh scripts/fuzz.sh [SECONDS]
set -eu
secs=${1:-30}
cd "$(dirname "$0")/.."
# fiberio itself under ASan+UBSan for the stream harness, with the fiber switches annotated (the Boost
# sources that takes: scripts/boost-fiber-source.sh).
boost=$(sh scripts/boost-fiber-source.sh)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFIBERIO_FUZZ=ON \
  -DFIBERIO_SANITIZE=address -DFIBERIO_BOOST_SOURCE="$boost" -DFIBERIO_BUILD_TESTS=OFF -DFIBERIO_BUILD_DEMOS=OFF -DFIBERIO_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-fuzz -j2 --target fuzz_address fuzz_http_request fuzz_stream fuzz_rpc_frame
# One harness: its status goes to build-fuzz/fuzz_NAME.status.
fuzz_one() {
  name=$1
  mkdir -p "build-fuzz/corpus/$name" "build-fuzz/crashes/$name"
  cp fuzz/corpus/$name/* "build-fuzz/corpus/$name/"
  status=0
  "build-fuzz/fuzz/fuzz_$name" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$name/" "build-fuzz/corpus/$name" \
    >"build-fuzz/fuzz_$name.log" 2>&1 || status=$?
  echo "$status" >"build-fuzz/fuzz_$name.status"
}
# Two at a time: each harness runs on one core, and the machine has two.
rm -f build-fuzz/fuzz_*.status
for pair in "address http_request" "stream rpc_frame"; do
  for name in $pair; do
    echo "== fuzz_$name for $secs s"
    fuzz_one "$name" &
  done
  wait
done
failed=0
for name in address http_request stream rpc_frame; do
  echo "== fuzz_$name"
  grep -E "^#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY" "build-fuzz/fuzz_$name.log" || true
  status=$(cat "build-fuzz/fuzz_$name.status")
  if [ "$status" -ne 0 ]; then
    tail -40 "build-fuzz/fuzz_$name.log"
    echo "fuzz_$name failed (status $status); the input is in build-fuzz/crashes/$name/" >&2
    failed=1
  fi
done
exit $failed
