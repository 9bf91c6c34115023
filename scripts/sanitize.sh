#!/bin/sh
# The sanitizer job (.ci/run runs both after the main suite):
#   sh scripts/sanitize.sh address   # fiberio, its demos and the whole test suite under ASan+UBSan
#   sh scripts/sanitize.sh thread    # the tests in which several threads meet, under TSan
# Every fiber switch is annotated for the sanitizer (FIBERIO_SANITIZE in CMakeLists.txt says how);
# scripts/boost-fiber-source.sh fetches the Boost sources that takes. The tests left out, and why, are
# in tests/sanitizers.txt and nowhere else. No report about fiberio's own code is suppressed.
set -eu
kind=${1:-}
case "$kind" in
  address) dir=build-asan demos=ON ;;
  thread) dir=build-tsan demos=OFF ;;
  *) echo "usage: sh scripts/sanitize.sh address|thread" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
boost=$(sh scripts/boost-fiber-source.sh)
list=tests/sanitizers.txt
skip=$(awk -v k="$kind" '$1 == "skip" && ($2 == k || $2 == "all") { printf "%s%s", sep, $3; sep = "|" }' $list)
# -O1 -g1: line numbers in reports, and a build that fits CI's time; NDEBUG as in a release build (and as
# Debian built Boost: Boost.Fiber's own assertions read its lists unlocked, which TSan would report).
cmake -S . -B $dir -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DFIBERIO_SANITIZE=$kind -DFIBERIO_BOOST_SOURCE="$boost" \
  -DFIBERIO_BUILD_BENCHMARKS=OFF -DFIBERIO_BUILD_DEMOS=$demos >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# die_after_fork=0: tests fork children that start threads (process exit, fork handling); TSan
# cannot check such a child, but it must still run.
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:die_after_fork=0
if [ "$kind" = address ]; then
  cmake --build $dir -j2
  ctest --test-dir $dir --output-on-failure -j2 --timeout 300 -E "$skip"
else
  targets=$(awk '$1 == "run" && $2 == "thread" { gsub(/\|/, " ", $3); print $3 }' $list)
  only=$(awk '$1 == "run" && $2 == "thread" { print $4 }' $list)
  # shellcheck disable=SC2086
  cmake --build $dir -j2 --target $targets
  ctest --test-dir $dir --output-on-failure -j2 --timeout 300 -R "$only" -E "$skip"
fi
