#!/bin/sh
# Builds tests/consumer against fiberio via add_subdirectory and via find_package after install, and
# checks what the install puts where (libfiberio.so + SONAME links, libfiberio_patched.so, headers, the
# gdb script).
# Usage: packaging_test.sh <fiberio source dir> <fiberio build dir>
set -eu
src=$1; build=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
run_consumers() {
  "$1/consumer" | grep -q "consumer: 42"
  "$1/consumer_patched" | grep -q "consumer_patched: installed=1 ticks=[0-9]* cooperative"
  "$1/consumer_tls" | grep -q "consumer_tls: TlsError with reason"
}
echo "== add_subdirectory"
cmake -S "$src/tests/consumer" -B "$work/sub" -DFIBERIO_SOURCE="$src" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/sub" -j2 --target consumer consumer_patched consumer_tls >/dev/null
run_consumers "$work/sub"
echo "== cmake --install + find_package"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/tests/consumer" -B "$work/pkg" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/pkg" -j2 >/dev/null
run_consumers "$work/pkg"
echo "== installed files"
shims=$(find "$work/prefix" -name libfiberio_patched.so)
test -n "$shims" || { echo "libfiberio_patched.so not installed"; exit 1; }
lib=$(dirname "$shims")
test -f "$work/prefix/include/fiberio/patched.hpp" || { echo "include/fiberio/patched.hpp not installed"; exit 1; }
test -f "$work/prefix/include/fiberio/tls.hpp" || { echo "include/fiberio/tls.hpp not installed"; exit 1; }
test -f "$work/prefix/include/fiberio/fiberio.hpp" || { echo "include/fiberio/fiberio.hpp not installed"; exit 1; }
test -f "$work/prefix/share/fiberio/gdb/fiberio-gdb.py" || { echo "share/fiberio/gdb/fiberio-gdb.py not installed"; exit 1; }
test ! -e "$work/prefix/include/fiberio/detail" || { echo "internal headers (fiberio/detail) were installed"; exit 1; }
test ! -e "$work/prefix/include/patched" || { echo "include/patched/ was installed (the shims' header is fiberio/patched.hpp)"; exit 1; }
if [ -f "$lib/libfiberio.a" ]; then
  echo "static build (FIBERIO_SHARED=OFF)"
else
  # libfiberio.so -> libfiberio.so.<major.minor> (the SONAME) -> the real file
  soname=$(readlink "$lib/libfiberio.so")
  test -L "$lib/$soname" && test -f "$lib/$(readlink "$lib/$soname")" || { echo "libfiberio.so SONAME links broken"; exit 1; }
  objdump -p "$lib/libfiberio.so" | grep -q "SONAME *$soname" || { echo "SONAME is not $soname"; exit 1; }
  # The installed shims find the libfiberio.so beside them ($ORIGIN), whatever they are preloaded into.
  out=$(LD_PRELOAD="$shims" sh -c 'echo preloaded-ok' 2>&1)
  test "$out" = "preloaded-ok" || { echo "LD_PRELOAD of the installed shims into sh: $out"; exit 1; }
  # Preloaded into the installed consumer, which links libfiberio.so only: one fiberio, no warning.
  out=$(LD_PRELOAD="$shims" "$work/pkg/consumer" 2>&1)
  test "$out" = "consumer: 42" || { echo "LD_PRELOAD into consumer: $out"; exit 1; }
fi
echo "packaging OK"
