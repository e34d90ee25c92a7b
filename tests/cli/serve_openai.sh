#!/bin/bash
# `trustmoe serve` with the official `openai` npm client (installed once into
# $BUILD/npm-openai; without npm or the registry, and with nothing cached, the
# test says SKIP and why).
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/mpi_lib.bash
M=models/brown-moe
NPM_DIR=$BUILD/npm-openai
if [ ! -f "$NPM_DIR/node_modules/openai/package.json" ]; then
    mkdir -p "$NPM_DIR"
    if ! (cd "$NPM_DIR" && timeout 300 npm install --silent --no-audit --no-fund openai@4.104.0 >/dev/null 2>&1); then
        echo "SKIP the openai npm package could not be installed (no npm or no registry) and none is cached in $NPM_DIR"
        exit 0
    fi
fi
expected=$("$TRUSTMOE" generate -m $M -p "The jury said" -n 12 --temp 0 2>/dev/null)
"$TRUSTMOE" serve -m $M --port 0 --port-file "$TMP/port" 2>"$TMP/log" &
pid=$!
for _ in $(seq 300); do [ -s "$TMP/port" ] && break; sleep 0.1; done
if [ -s "$TMP/port" ]; then
    OPENAI_MODULE="$(realpath "$NPM_DIR")/node_modules/openai/index.mjs" \
        timeout 120 node tests/cli/serve_openai.mjs "$(cat "$TMP/port")" brown-moe "$expected" >"$TMP/out" 2>&1
    rc=$?
    cat "$TMP/out"
    [ $rc -eq 0 ] && ok "the openai client's checks" || bad "the openai client's checks (rc $rc)"
else
    bad "server did not start: $(cat "$TMP/log")"
fi
kill -TERM $pid; wait $pid
finish
