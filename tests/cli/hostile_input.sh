#!/bin/bash
# Hostile input files and flags: each case ends within seconds with exit 2 (or
# 1 where stated) and one stderr line naming the file or flag, never a crash,
# a hang on a FIFO, or a read of /dev/zero.
set -u
T=${TRUSTMOE:-build/trustmoe}
FIX=tests/fixtures/qwen3moe-bf16
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
pass=0; fail=0

# expect NAME RC WANT_SUBSTRING... -- CMD...   (at most 20 s)
# a hang is caught within LIMIT seconds; sanitizer builds run 5-20x slower
LIMIT=20
case "${BUILD:-build}" in *asan*) LIMIT=120 ;; esac
expect() {
    local name=$1 want_rc=$2; shift 2
    local pats=()
    while [ "$1" != "--" ]; do pats+=("$1"); shift; done
    shift
    timeout $LIMIT "$@" >"$W/out" 2>"$W/err" </dev/null
    local rc=$? ok=1 why=""
    [ $rc -eq "$want_rc" ] || { ok=0; why="exit $rc, want $want_rc"; }
    grep -q "AddressSanitizer\|runtime error" "$W/err" && { ok=0; why="$why; sanitizer report"; }
    for p in "${pats[@]}"; do grep -qF -- "$p" "$W/err" || { ok=0; why="$why; missing '$p'"; }; done
    if [ $ok -eq 1 ]; then pass=$((pass + 1)); echo "ok   $name: $(tail -n 1 "$W/err" | head -c 200)"
    else fail=$((fail + 1)); echo "FAIL $name: $why"; sed 's/^/     /' "$W/err" | head -5; fi
}
mk() { rm -rf "$W/$1"; mkdir -p "$W/$1"; cp "$FIX/config.json" "$FIX/model.safetensors" "$W/$1/"; echo "$W/$1"; }
setcfg() { python3 - "$1/config.json" "$2" "$3" <<'PY'
import json, sys; p = sys.argv[1]; c = json.load(open(p)); c[sys.argv[2]] = json.loads(sys.argv[3]); json.dump(c, open(p, 'w'))
PY
}

# 8: FIFOs and devices as input files
d=$(mk fifo_cfg); rm "$d/config.json"; mkfifo "$d/config.json"
expect "FIFO config.json" 2 "config.json: config is a FIFO" -- $T inspect -m "$d"
d=$(mk fifo_st); rm "$d/model.safetensors"; mkfifo "$d/model.safetensors"
expect "FIFO model.safetensors" 2 "model.safetensors: safetensors file is a FIFO" -- $T logits -m "$d" --ids 1 -o "$W/l"
d=$(mk zero_cfg); rm "$d/config.json"; ln -s /dev/zero "$d/config.json"
expect "/dev/zero config.json" 2 "config.json: config is a character device" -- $T inspect -m "$d"
d=$(mk zero_tok); ln -s /dev/zero "$d/tokenizer.json"
expect "/dev/zero tokenizer.json" 2 "tokenizer.json: tokenizer is a character device" -- $T tokenize -m "$d" -p hi
ln -s /dev/zero "$W/zero.prompts"
expect "/dev/zero --prompts" 2 "zero.prompts: prompts file is a character device" -- $T generate -m $FIX --prompts "$W/zero.prompts" -n 1
mkfifo "$W/policy.fifo"
expect "FIFO --policy" 2 "policy.fifo: policy is a FIFO" -- $T generate -m $FIX --ids 1,2 -n 1 --policy "$W/policy.fifo"
head -c $((5 << 20)) /dev/zero | tr '\0' ' ' >"$W/big.policy"
expect "5 MB --policy" 2 "big.policy: policy of 5242880 bytes exceeds the limit" -- $T generate -m $FIX --ids 1,2 -n 1 --policy "$W/big.policy"

# 3, 4, 6: config values the kernels cannot take
d=$(mk hd); setcfg "$d" head_dim 2048
expect "head_dim 2048" 2 "config.json: head_dim 2048 exceeds 1024" -- $T inspect -m "$d"
d=$(mk ne); setcfg "$d" num_experts 5000
expect "num_experts 5000" 2 "config.json: num_experts 5000 exceeds 4096" -- $T inspect -m "$d"
d=$(mk big); sed -i 's/"vocab_size": 512/"vocab_size": 1e400/' "$d/config.json"
expect "vocab_size 1e400" 2 "config.json: field 'vocab_size' must be a 32-bit integer" -- $T inspect -m "$d"

# 10, 11: prompts files
printf '1,2\n3,4\nhello\0world\n' >"$W/nul.prompts"
expect "NUL in --prompts" 2 "nul.prompts:3: a NUL byte" -- $T generate -m $FIX --prompts "$W/nul.prompts" -n 1
seq 1 300 | sed 's/.*/1,2,&/' >"$W/many.prompts"
expect "300 prompts > --max-batch 256" 2 "many.prompts:257: more than 256 prompts (--max-batch)" -- \
    $T generate -m $FIX --prompts "$W/many.prompts" -n 1
expect "--max-batch 400 admits them" 0 -- $T generate -m $FIX --prompts "$W/many.prompts" -n 1 --max-batch 400

# 5: a token id past the vocab, with fitted contexts (classified before the forward pass)
python3 -c "import random; random.seed(3); print(' '.join(str(random.randrange(512)) for _ in range(600)))" >"$W/corpus.txt"
if $T trust fit-contexts -m $FIX --corpus "$W/corpus.txt" --trust-db "$W/ctx.db" --contexts 2 --window 32 >/dev/null 2>"$W/err"; then
    expect "id >= vocab with contexts" 2 "token id 600 at position 1 is outside the vocab" -- \
        $T generate -m $FIX --ids 1,600 -n 1 --trust-db "$W/ctx.db" --select trust-first
else
    fail=$((fail + 1)); echo "FAIL fit-contexts: $(cat "$W/err")"
fi

# 14-16: the trust database
head -c 8192 /dev/urandom >"$W/garbage.db"
expect "--trust-db garbage, show" 2 "garbage.db" -- $T trust show --trust-db "$W/garbage.db"
expect "--trust-db garbage, generate" 2 "garbage.db" -- $T generate -m $FIX --ids 1,2 -n 1 --trust-db "$W/garbage.db" --select trust-first
expect "--trust-db empty" 2 "--trust-db: empty path" -- $T trust show --trust-db ""
if grep -q "not an error" "$W/err"; then fail=$((fail + 1)); echo "FAIL --trust-db empty says 'not an error'"; fi
sum0=$(sha256sum "$W/ctx.db" | cut -d' ' -f1); rm -f "$W/ctx.db-wal" "$W/ctx.db-shm"
for c in show check dump; do $T trust $c --trust-db "$W/ctx.db" >/dev/null 2>&1; done
if [ "$(sha256sum "$W/ctx.db" | cut -d' ' -f1)" = "$sum0" ] && [ ! -s "$W/ctx.db-wal" ]; then
    pass=$((pass + 1)); echo "ok   trust show/check/dump leave the database as it was"
else fail=$((fail + 1)); echo "FAIL trust show/check/dump wrote to the database"; fi

# 17: an unwritable --stats-json is a failure
expect "--stats-json unwritable" 1 "--stats-json $W/no/such/dir/s.json: cannot write" -- \
    $T generate -m $FIX --ids 1,2 -n 2 --stats-json "$W/no/such/dir/s.json"

# 12: balanced placement over 1024 workers x 1024 replicas, in seconds
python3 -c "
import json, random; random.seed(1)
print(json.dumps({'expert_tokens': [[random.randint(0, 1000) for e in range(128)] for l in range(48)]}))" >"$W/stats.json"
t0=$SECONDS
expect "balanced 1024 x 1024" 0 -- $T inspect --synthetic omni30b --workers 1024 --replicas 1024 --placement "balanced:$W/stats.json"
echo "     ($((SECONDS - t0)) s)"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
