#!/bin/bash
# The chat page at / in headless Chromium (Debian's chromium, driven by the
# puppeteer-core npm package, installed once into $BUILD/npm-puppeteer): it
# sends a message and the streamed reply is the greedy chat reply.  The
# screenshot goes to $BUILD/serve-page.png.  Without chromium (CI installs it:
# TRUSTMOE_TEST_DEPS=1 deploy/install-deps.sh) or npm, the test says SKIP and why.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/mpi_lib.bash
M=models/brown-moe
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    echo "SKIP no chromium at $CHROMIUM (apt-get install chromium, or TRUSTMOE_TEST_DEPS=1 deploy/install-deps.sh)"
    exit 0
fi
NPM_DIR=$BUILD/npm-puppeteer
if [ ! -f "$NPM_DIR/node_modules/puppeteer-core/package.json" ]; then
    mkdir -p "$NPM_DIR"
    if ! (cd "$NPM_DIR" && timeout 300 npm install --silent --no-audit --no-fund puppeteer-core@23.11.1 >/dev/null 2>&1); then
        echo "SKIP the puppeteer-core npm package could not be installed (no npm or no registry) and none is cached"
        exit 0
    fi
fi
reply=$("$TRUSTMOE" generate -m $M --chat -p Hello -n 256 --temp 0 2>/dev/null)
"$TRUSTMOE" serve -m $M --port 0 --port-file "$TMP/port" --temp 0 2>"$TMP/log" &
pid=$!
for _ in $(seq 300); do [ -s "$TMP/port" ] && break; sleep 0.1; done
if [ -s "$TMP/port" ]; then
    rm -f "$BUILD/serve-page.png"
    PUPPETEER_MODULE="$(realpath "$NPM_DIR")/node_modules/puppeteer-core/lib/esm/puppeteer/puppeteer-core.js" \
        CHROMIUM="$CHROMIUM" timeout 180 node tests/cli/serve_page.mjs "$(cat "$TMP/port")" "$reply" \
        "$BUILD/serve-page.png" >"$TMP/out" 2>&1
    rc=$?
    cat "$TMP/out"
    [ $rc -eq 0 ] && [ -s "$BUILD/serve-page.png" ] && ok "the chat page in Chromium ($BUILD/serve-page.png)" ||
        bad "the chat page in Chromium (rc $rc)"
else
    bad "server did not start: $(cat "$TMP/log")"
fi
kill -TERM $pid; wait $pid
finish
