#!/bin/sh
# Installs fiberio's build and test dependencies from Debian 12 packages.
# Idempotent: installs only what is missing, so it is cheap on a ready machine.
set -eu
PKGS="build-essential cmake pkg-config
libboost-fiber1.81-dev libboost-context1.81-dev libboost-stacktrace1.81-dev
libfmt-dev googletest libgtest-dev libbenchmark-dev
libhiredis-dev redis-server libpq-dev postgresql
libcurl4-openssl-dev libssl-dev openssl libzmq3-dev
clang libclang-rt-14-dev
curl netcat-openbsd gdb
nlohmann-json3-dev libcli11-dev gnuplot-nox
wrk nginx-light golang-go python3-gevent"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  # Debian starts redis/postgresql/nginx services on install; tests and benchmarks start their own
  # private servers (wrk, nginx-light, golang-go, python3-gevent: tests/test_http.cpp and
  # benchmarks/http_compare.sh).
else
  echo "setup: all dependencies present"
fi
