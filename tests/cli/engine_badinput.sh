#!/bin/bash
# Bad input to the engine: each case must exit 2 with one line on stderr that
# names the file and the tensor or field, and never crash or hang.
set -u
T=${TRUSTMOE:-build/trustmoe}
FIX=tests/fixtures/qwen3moe-bf16
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0

# expect NAME WANT_SUBSTRING... -- CMD...
expect() {
    local name=$1; shift
    local pats=()
    while [ "$1" != "--" ]; do pats+=("$1"); shift; done
    shift
    timeout 60 "$@" >"$W/out" 2>"$W/err"
    local rc=$?
    local ok=1 why=""
    [ $rc -eq 2 ] || { ok=0; why="exit $rc, want 2"; }
    local lines; lines=$(wc -l <"$W/err")
    [ "$lines" -eq 1 ] || { ok=0; why="$why; $lines stderr lines, want 1"; }
    grep -q "AddressSanitizer\|runtime error" "$W/err" && { ok=0; why="$why; sanitizer report"; }
    for p in "${pats[@]}"; do grep -qF -- "$p" "$W/err" || { ok=0; why="$why; missing '$p'"; }; done
    if [ $ok -eq 1 ]; then pass=$((pass + 1)); echo "ok   $name: $(head -c 200 "$W/err")"
    else fail=$((fail + 1)); echo "FAIL $name: $why"; sed 's/^/     /' "$W/err" | head -5; fi
}

# mk NAME: a copy of the fixture folder in $W/NAME
mk() { rm -rf "$W/$1"; cp -r "$FIX" "$W/$1"; rm -rf "$W/$1/ref"; echo "$W/$1"; }
ST=model.safetensors

d=$(mk trunc); python3 - "$d/$ST" <<'PY'
import os, sys; p = sys.argv[1]; os.truncate(p, os.path.getsize(p) - 1000)
PY
expect "truncated file" "$ST" "data_offsets" "truncated" -- $T logits -m "$d" --ids 1,2 -o "$W/l"

d=$(mk hdrlen); python3 - "$d/$ST" <<'PY'
import struct, sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[:8] = struct.pack('<Q', 1 << 40); open(p, 'wb').write(b)
PY
expect "header length past end" "$ST" "header length" "past the end" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk notjson); python3 - "$d/$ST" <<'PY'
import struct, sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[8:12] = b'xx{['; open(p, 'wb').write(b)
PY
expect "header not JSON" "$ST" "not a JSON object" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk empty); : >"$d/$ST"
expect "empty file" "$ST" "empty file" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk short); printf 'abc' >"$d/$ST"
expect "file shorter than 8 bytes" "$ST" "truncated" -- $T logits -m "$d" --ids 1 -o "$W/l"

# rewrite the header with a python edit function applied to the parsed JSON
edit_header() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys
p, code = sys.argv[1], sys.argv[2]
b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); data = b[8 + n:]
exec(code)
hb = json.dumps(h).encode(); hb += b' ' * (-len(hb) % 8)
open(p, 'wb').write(struct.pack('<Q', len(hb)) + hb + data)
PY
}
Q=model.layers.2.self_attn.q_proj.weight
d=$(mk dtype); edit_header "$d/$ST" "h['$Q']['dtype'] = 'Q7'"
expect "unknown dtype" "$ST" "$Q" "Q7" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk offsets); edit_header "$d/$ST" "h['$Q']['data_offsets'] = [0, 1 << 36]"
expect "data offsets out of range" "$ST" "$Q" "out of range" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk sizemis); edit_header "$d/$ST" "o = h['$Q']['data_offsets']; h['$Q']['data_offsets'] = [o[0], o[1] - 2]"
expect "offsets disagree with shape" "$ST" "$Q" "bytes for" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk shape); edit_header "$d/$ST" "s = h['$Q']['shape']; h['$Q']['shape'] = [s[1], s[0]]"
expect "shape does not match config" "$ST" "$Q" "does not match the config" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk missing); edit_header "$d/$ST" "del h['$Q']"
expect "missing tensor" "$Q" "missing" -- $T logits -m "$d" --ids 1 -o "$W/l"

d=$(mk nan); python3 - "$d/$ST" "$Q" <<'PY'
import json, struct, sys
p, name = sys.argv[1], sys.argv[2]
b = bytearray(open(p, 'rb').read()); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
o = 8 + n + h[name]['data_offsets'][0] + 10
b[o:o + 2] = b'\xc0\x7f'     # a BF16 NaN
open(p, 'wb').write(b)
PY
expect "NaN in weights" "$ST" "$Q" "non-finite" -- $T logits -m "$d" --ids 1 -o "$W/l"
# the scan can be skipped on request
if timeout 60 $T logits -m "$d" --ids 1 -o "$W/l" --no-check-finite 2>/dev/null; then pass=$((pass + 1)); echo "ok   --no-check-finite loads"; else fail=$((fail + 1)); echo "FAIL --no-check-finite"; fi

d=$(mk cfgjson); echo '{"model_type": "qwen3_moe",' >"$d/config.json"
expect "config not JSON" "config.json" "not a JSON object" -- $T logits -m "$d" --ids 1 -o "$W/l"

edit_cfg() { python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); $2; json.dump(c, open(p,'w'))" "$1"; }
d=$(mk topk); edit_cfg "$d/config.json" "c['num_experts_per_tok'] = 99"
expect "top-k over experts" "config.json" "num_experts_per_tok" -- $T logits -m "$d" --ids 1 -o "$W/l"
d=$(mk kvh); edit_cfg "$d/config.json" "c['num_key_value_heads'] = 3"
expect "kv heads do not divide heads" "config.json" "num_key_value_heads" -- $T logits -m "$d" --ids 1 -o "$W/l"
d=$(mk nocfg); rm "$d/config.json"
expect "missing config" "config.json" "not a model folder" -- $T logits -m "$d" --ids 1 -o "$W/l"
d=$(mk noweights); rm "$d/$ST"
expect "missing weights" "no model.safetensors" -- $T logits -m "$d" --ids 1 -o "$W/l"
expect "missing folder" "does-not-exist" -- $T logits -m "$W/does-not-exist" --ids 1 -o "$W/l"

# sharded: the index names a tensor its shard lacks, and a missing shard
d="$W/shard"; rm -rf "$d"; cp -r tests/fixtures/qwen3moe-mixed-sharded "$d"
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['weight_map']['model.extra.weight']='model-00001-of-00003.safetensors'; json.dump(c,open(p,'w'))" "$d/model.safetensors.index.json"
expect "index names a tensor the shard lacks" "model.extra.weight" "missing" -- $T logits -m "$d" --ids 1 -o "$W/l"
d="$W/shard2"; rm -rf "$d"; cp -r tests/fixtures/qwen3moe-mixed-sharded "$d"; rm "$d/model-00002-of-00003.safetensors"
expect "missing shard" "model-00002-of-00003.safetensors" "cannot open" -- $T logits -m "$d" --ids 1 -o "$W/l"

# flags and ids
expect "unknown flag" "--frobnicate" -- $T logits -m "$FIX" --ids 1 -o "$W/l" --frobnicate
expect "bad -n" "-n" -- $T generate -m "$FIX" --ids 1 -n lots
expect "bad --temp" "--temp" -- $T generate -m "$FIX" --ids 1 --temp -1
expect "bad --ids" "--ids" -- $T logits -m "$FIX" --ids 1,x,3 -o "$W/l"
expect "flag without value" "-m" "needs a value" -- $T logits --ids 1 -o "$W/l" -m
expect "id out of vocabulary" "token id 512" "vocabulary" -- $T logits -m "$FIX" --ids 1,512 -o "$W/l"
expect "id out of vocabulary (generate)" "token id 99999" -- $T generate -m "$FIX" --ids 99999 -n 2
long=$(python3 -c "print(','.join(['1'] * 300))")
expect "prompt longer than the context" "300 tokens" "longer than the context" -- $T logits -m "$FIX" --ids "$long" -o "$W/l"
expect "prompt longer than -c" "longer than the context" -- $T generate -m "$FIX" --ids 1,2,3,4 -c 3 -n 1
expect "-c over max_position_embeddings" "max_position_embeddings" -- $T generate -m "$FIX" --ids 1 -c 100000 -n 1
expect "unwritable output" "cannot open for writing" -- $T logits -m "$FIX" --ids 1 -o "$W/no/such/dir/l"
expect "unknown command" "unknown command" -- $T frobnicate

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
