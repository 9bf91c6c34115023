#!/bin/sh
# Prints the path of a Boost 1.81 source tree holding Boost.Fiber's and Boost.Context's sources
# (libs/fiber/src, libs/context/src) from Debian 12's own source package boost1.81, fetching them once
# into .cache/ of the checkout. Sanitizer builds compile them in, so that every fiber switch is
# annotated (see FIBERIO_SANITIZE in CMakeLists.txt).
#
# For this job only, it adds a deb-src entry for bookworm (removed again on exit) and lets apt verify
# the download against the signed Sources index. Debian's patches to boost1.81 touch nothing under
# libs/fiber (checked below), so the upstream tarball's files are exactly what Debian built.
set -eu
cd "$(dirname "$0")/.."
dest=.cache/boost1.81
if [ -f "$dest/libs/fiber/src/context.cpp" ] && [ -f "$dest/libs/context/src/fiber.cpp" ]; then
  echo "$PWD/$dest"
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
list=/etc/apt/sources.list.d/fiberio-boost-src.sources
work=$(mktemp -d)
cleanup() { $SUDO rm -f "$list"; rm -rf "$work"; }
trap cleanup EXIT INT TERM
printf '%s\n' 'Types: deb-src' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm' 'Components: main' \
  'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | $SUDO tee "$list" >/dev/null
$SUDO apt-get update -qq >&2
(cd "$work" && apt-get source --download-only -qq boost1.81 >&2 2>/dev/null)
tar -xJf "$work"/boost1.81_*.debian.tar.xz -C "$work" debian/patches
if grep -l 'libs/fiber/\|boost/fiber/\|boost/context/' "$work"/debian/patches/* >&2; then
  echo "boost-fiber-source: a Debian patch touches Boost.Fiber/Context; apply it before building" >&2
  exit 1
fi
mkdir -p "$dest"
tar -xJf "$work"/boost1.81_1.81.0.orig.tar.xz -C "$dest" --strip-components=1 \
  --wildcards '*/libs/fiber/src/*' '*/libs/context/src/*'
echo "$PWD/$dest"
