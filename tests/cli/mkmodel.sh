#!/bin/bash
# trustmoe mkmodel: the tiny preset as one file and sharded, checked with
# python3 (standard library only): safetensors headers, contiguous offsets,
# shapes against config.json, weight statistics, determinism, and the
# one-line exit-2 errors.
set -u
T=${TRUSTMOE:-build/trustmoe}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -f "$W/err" ] && sed 's/^/     /' "$W/err" | head -5; }

check_model() { # DIR [SEED]: validate a written folder
    python3 - "$1" <<'PY'
import json, struct, sys, os, math
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "config.json")))
assert cfg["model_type"] == "qwen3_moe" and cfg["architectures"] == ["Qwen3MoeForCausalLM"], cfg
H, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_experts"]
I, V, D = cfg["moe_intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
want = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H], "lm_head.weight": [V, H]}
for i in range(L):
    p = f"model.layers.{i}."
    want.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                 p + "self_attn.q_proj.weight": [NH * D, H], p + "self_attn.k_proj.weight": [NKV * D, H],
                 p + "self_attn.v_proj.weight": [NKV * D, H], p + "self_attn.o_proj.weight": [H, NH * D],
                 p + "self_attn.q_norm.weight": [D], p + "self_attn.k_norm.weight": [D],
                 p + "mlp.gate.weight": [E, H]})
    for e in range(E):
        q = p + f"mlp.experts.{e}."
        want.update({q + "gate_proj.weight": [I, H], q + "up_proj.weight": [I, H], q + "down_proj.weight": [H, I]})

idx = os.path.join(d, "model.safetensors.index.json")
if os.path.exists(idx):
    ix = json.load(open(idx))
    files = sorted(set(ix["weight_map"].values()))
    assert len(files) > 1, files
    assert set(ix["weight_map"]) == set(want), "index weight_map names differ from the config's tensors"
else:
    files = ["model.safetensors"]
    ix = None

seen, total = {}, 0
for fn in files:
    path = os.path.join(d, fn)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        assert n % 8 == 0 and 8 + n <= size, (fn, n, size)
        hdr = json.loads(f.read(n).decode("utf-8"))
        assert hdr.pop("__metadata__") == {"format": "pt"}
        spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in hdr.items())
        pos = 0
        for b, e, k in spans:
            assert b == pos, f"{fn}: {k} starts at {b}, previous ended at {pos}"
            pos = e
        assert pos == size - 8 - n, f"{fn}: data ends at {pos}, file holds {size - 8 - n}"
        for k, v in hdr.items():
            assert k not in seen, f"{k} in two files"
            assert v["dtype"] == "BF16", (k, v["dtype"])
            assert v["shape"] == want.get(k), f"{k}: shape {v['shape']}, config says {want.get(k)}"
            nel = math.prod(v["shape"])
            b, e = v["data_offsets"]
            assert e - b == 2 * nel, k
            if ix is not None:
                assert ix["weight_map"][k] == fn, k
            seen[k] = fn
            # statistics: norms are exactly 1; matrices have std 1/sqrt(cols), embedding std 1
            f.seek(8 + n + b)
            raw = f.read(e - b)
            vals = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for (h,) in struct.iter_unpack("<H", raw)]
            if len(v["shape"]) == 1:
                assert all(x == 1.0 for x in vals), f"{k}: norm weight not all 1"
            else:
                std = 1.0 if k.endswith("embed_tokens.weight") else 1.0 / math.sqrt(v["shape"][1])
                m = sum(vals) / len(vals)
                s = math.sqrt(sum((x - m) ** 2 for x in vals) / len(vals))
                tol = 4.0 / math.sqrt(len(vals)) + 0.02
                assert abs(m) < 4 * std / math.sqrt(len(vals)) + 1e-3 and abs(s / std - 1) < tol, \
                    f"{k}: mean {m}, std {s}, want 0 and {std}"
        total += size - 8 - n
assert set(seen) == set(want), f"missing {sorted(set(want) - set(seen))[:3]}, extra {sorted(set(seen) - set(want))[:3]}"
if ix is not None:
    assert ix["metadata"]["total_size"] == total, (ix["metadata"]["total_size"], total)
print(f"{d}: {len(seen)} tensors in {len(files)} file(s), {total} bytes")
PY
}

# 1. tiny preset, one file
if $T mkmodel --preset tiny -o "$W/a" --seed 7 2>"$W/err" && check_model "$W/a" >"$W/err" 2>&1; then
    ok "tiny: header, offsets, shapes, statistics"
else bad "tiny: header, offsets, shapes, statistics"; fi

# 2. determinism: same seed same bytes, other seed other bytes
$T mkmodel --preset tiny -o "$W/b" --seed 7 2>/dev/null
$T mkmodel --preset tiny -o "$W/c" --seed 8 2>/dev/null
if cmp -s "$W/a/model.safetensors" "$W/b/model.safetensors" && ! cmp -s "$W/a/model.safetensors" "$W/c/model.safetensors" \
    && cmp -s "$W/a/config.json" "$W/c/config.json"; then ok "seeded: same seed same bytes, new seed new bytes"
else bad "seeded: same seed same bytes, new seed new bytes"; fi

# 3. sharded (limit lowered to 200 kB): index.json, per-shard headers, same tensors
if TRUSTMOE_MK_SHARD_BYTES=200000 $T mkmodel --preset tiny -o "$W/s" --seed 7 2>"$W/err" \
    && [ -f "$W/s/model.safetensors.index.json" ] && [ ! -f "$W/s/model.safetensors" ] \
    && check_model "$W/s" >"$W/err" 2>&1; then ok "sharded: index and shards"
else bad "sharded: index and shards"; fi

# 4. --config: a config.json in another form (v5 spelling of the expert count)
cat >"$W/cfg.json" <<'JSON'
{"model_type": "qwen3_moe", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
 "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 100, "moe_intermediate_size": 8,
 "intermediate_size": 64, "num_local_experts": 5, "num_experts_per_tok": 2, "norm_topk_prob": true,
 "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "tie_word_embeddings": false}
JSON
if $T mkmodel --config "$W/cfg.json" -o "$W/k" 2>"$W/err" && check_model "$W/k" >"$W/err" 2>&1 \
    && python3 -c "import json,sys; c=json.load(open(sys.argv[1])); assert c['num_experts']==5 and c['rope_theta']==10000" "$W/k/config.json" 2>"$W/err"
then ok "--config FILE"; else bad "--config FILE"; fi

# 5. the engine reads the folder
if $T inspect -m "$W/a" >"$W/err" 2>&1; then ok "inspect reads the tiny model"; else bad "inspect reads the tiny model"; fi

# 6. bad input: exit 2, one line on stderr
expect2() {
    local name=$1; shift
    "$@" >/dev/null 2>"$W/err"
    local rc=$? lines; lines=$(wc -l <"$W/err")
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && ! grep -q "AddressSanitizer\|runtime error" "$W/err"; then
        ok "$name: $(cat "$W/err")"
    else bad "$name (exit $rc, $lines stderr lines)"; fi
}
touch "$W/afile"
expect2 "unknown preset" $T mkmodel --preset nope -o "$W/x"
expect2 "no output dir" $T mkmodel --preset tiny
expect2 "unknown flag" $T mkmodel --preset tiny -o "$W/x" --bogus
expect2 "preset and config" $T mkmodel --preset tiny --config "$W/cfg.json" -o "$W/x"
expect2 "bad seed" $T mkmodel --preset tiny -o "$W/x" --seed abc
expect2 "missing config" $T mkmodel --config "$W/none.json" -o "$W/x"
expect2 "output is a file" $T mkmodel --preset tiny -o "$W/afile"
expect2 "output under a file" $T mkmodel --preset tiny -o "$W/afile/sub"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
