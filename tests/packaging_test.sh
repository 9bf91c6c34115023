#!/bin/sh
# Builds tests/consumer against fiberio via add_subdirectory and via find_package after install.
# Usage: packaging_test.sh <fiberio source dir> <fiberio build dir>
set -eu
src=$1; build=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "== add_subdirectory"
cmake -S "$src/tests/consumer" -B "$work/sub" -DFIBERIO_SOURCE="$src" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/sub" -j2 --target consumer >/dev/null
"$work/sub/consumer" | grep -q "consumer: 42"
echo "== cmake --install + find_package"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/tests/consumer" -B "$work/pkg" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/pkg" -j2 >/dev/null
"$work/pkg/consumer" | grep -q "consumer: 42"
echo "packaging OK"
