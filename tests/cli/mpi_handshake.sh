#!/bin/bash
# Start-up checks, all before any expert runs: a worker on another
# checkpoint (other tensors, or same tensors with other weights, or another
# shape), a worker that cannot load, placements that leave an expert unhosted
# or name a rank out of range, too many replicas; a valid placement file;
# inspect --workers (no MPI); --stats-json contents.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

M=$FIX/qwen3moe-bf16
V=$(vocab_of qwen3moe-bf16)
ids=$(prompt_ids qwen3moe-bf16 2)
common=(logits --ids "$ids" -o "$TMP/out.f32" --comm-timeout 10 --idle-timeout 30)

# expect_fail NAME REGEX mpirun-args...  (whole job must fail fast, message must match)
expect_fail() {
    local name=$1 want=$2
    shift 2
    rm -f "$TMP/out.f32"
    local t0=$SECONDS rc
    timeout -k 5 60 mpirun --oversubscribe "$@" >"$TMP/stdout" 2>"$TMP/err"
    rc=$?
    local line
    line=$(grep -E -m1 -- "$want" "$TMP/err")
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ -n "$line" ] && ! grep -q "workers ready" "$TMP/err" &&
        [ ! -e "$TMP/out.f32" ]; then
        ok "$name: exit $rc after $((SECONDS - t0))s: $line"
    else
        bad "$name: exit $rc, wanted /$want/ before compute"
        sed 's/^/    /' "$TMP/err" | head -15
    fi
}

# a worker on another checkpoint (MPMD: rank 2 gets another -m)
expect_fail "worker on another checkpoint" "model mismatch: worker rank 2 .*qwen3moe-mixed-sharded" \
    -np 2 "$TRUSTMOE" "${common[@]}" -m "$M" : -np 1 "$TRUSTMOE" "${common[@]}" -m "$FIX/qwen3moe-mixed-sharded"

# same names and shapes, other weights: only the content sample tells them apart
cp -r "$M" "$TMP/alt"
python3 - "$TMP/alt/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[-2] ^= 0x01          # low mantissa bit of the last BF16 value: still finite
open(p, 'wb').write(b)
PY
expect_fail "worker on same-shaped checkpoint with other weights" "model mismatch: worker rank 1 .*content sample" \
    -np 1 "$TRUSTMOE" "${common[@]}" -m "$M" : -np 2 "$TRUSTMOE" "${common[@]}" -m "$TMP/alt"

# another shape: 3 layers instead of 4
cp -r "$M" "$TMP/short"
python3 - "$TMP/short/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 3
json.dump(c, open(sys.argv[1], "w"))
PY
expect_fail "worker on a checkpoint of another shape" "worker rank 2 .*has 3 layers x 16 experts" \
    -np 2 "$TRUSTMOE" "${common[@]}" -m "$M" : -np 1 "$TRUSTMOE" "${common[@]}" -m "$TMP/short"

expect_fail "worker cannot load" "handshake: worker rank 1 .*nonexistent" \
    -np 1 "$TRUSTMOE" "${common[@]}" -m "$M" : -np 1 "$TRUSTMOE" "${common[@]}" -m "$TMP/nonexistent"

# placement files
python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
full = [[l, e, 1 + (e % 2)] for l in range(4) for e in range(16)]
json.dump({"workers": 2, "experts": [t for t in full if t[:2] != [2, 5]]}, open(d + "/hole.json", "w"))
json.dump({"experts": [[l, e, 3 if (l, e) == (1, 7) else r] for l, e, r in full]}, open(d + "/range.json", "w"))
# valid: replicas listed per expert, hot experts on both workers
json.dump({"workers": 2, "experts": [[l, e, [1, 2] if e < 4 else r] for l, e, r in full]}, open(d + "/ok.json", "w"))
PY
expect_fail "placement leaves an expert unhosted" "layer 2 expert 5 is hosted by no worker" \
    -np 3 "$TRUSTMOE" "${common[@]}" -m "$M" --placement "$TMP/hole.json"
expect_fail "placement names a rank out of range" "layer 1 expert 7: rank 3 is out of range" \
    -np 3 "$TRUSTMOE" "${common[@]}" -m "$M" --placement "$TMP/range.json"
expect_fail "placement file for another worker count" "written for \"workers\": 2" \
    -np 4 "$TRUSTMOE" "${common[@]}" -m "$M" --placement "$TMP/ok.json"
expect_fail "more replicas than workers" "replicas 3 needs at least 3 worker ranks" \
    -np 3 "$TRUSTMOE" "${common[@]}" -m "$M" --replicas 3

# a valid file gives the single-process answer
timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$TMP/ref.f32" 2>/dev/null
if tm_mpirun 60 3 logits -m "$M" --ids "$ids" -o "$TMP/file.f32" --placement "$TMP/ok.json" \
    --stats-json "$TMP/stats.json" 2>"$TMP/err" && msg=$(compare_logits "$TMP/ref.f32" "$TMP/file.f32" "$V" 1e-5); then
    ok "placement file with per-expert replicas: $msg"
else
    bad "placement file run: $(grep -m1 trustmoe "$TMP/err") ${msg:-}"
fi

# statistics: every section present, counts add up
if python3 - "$TMP/stats.json" "$ids" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
T = len(sys.argv[2].split(","))
for k in ["prefill", "decode", "time_s", "per_layer_us", "bytes", "load_imbalance", "ranks_detail", "expert_tokens"]:
    assert k in s, k
for k in ["attention", "routing", "dispatch", "dispatch_wait", "combine", "head"]:
    assert k in s["time_s"], k
assert s["prefill"]["tokens"] == T, s["prefill"]
assert s["prefill"]["tokens_per_second"] > 0
w = [r for r in s["ranks_detail"] if r["role"] == "worker"]
assert len(w) == 2 and all(r["expert_compute_s"] > 0 and r["bytes_sent"] > 0 and r["resident_bytes"] > 0 for r in w)
assert sum(r["bytes_received"] for r in w) == s["bytes"]["sent"], "bytes sent by rank 0 = received by workers"
assert sum(r["bytes_sent"] for r in w) == s["bytes"]["received"]
et = s["expert_tokens"]
assert len(et) == 4 and all(sum(row) == T * 4 for row in et), "top-4 of T tokens per layer"
assert s["load_imbalance"] >= 1.0
PY
then ok "--stats-json: sections present, bytes and expert-token counts add up"
else bad "--stats-json content"; fi

# a placement balanced by the load measured in that run
if tm_mpirun 60 4 logits -m "$M" --ids "$ids" -o "$TMP/bal.f32" --placement "balanced:$TMP/stats.json" \
    --replicas 2 2>"$TMP/err" && msg=$(compare_logits "$TMP/ref.f32" "$TMP/bal.f32" "$V" 1e-5); then
    ok "placement balanced by measured load, 2 replicas on 3 workers: $msg"
else
    bad "balanced placement: $(grep -m1 trustmoe "$TMP/err") ${msg:-}"
fi

# inspect prints the map without MPI (plain process, no launcher variables)
if env -u OMPI_COMM_WORLD_SIZE timeout 30 "$TRUSTMOE" inspect -m "$M" --workers 3 --placement round-robin --replicas 2 \
    >"$TMP/insp" 2>"$TMP/err" && grep -q "layers 0-3: rank 1: 0,2-3,5-6,8-9,11-12,14-15" "$TMP/insp" &&
    grep -q "rank 3: 40 experts" "$TMP/insp"; then
    ok "inspect --workers 3 --placement round-robin --replicas 2: $(grep -m1 '^total' "$TMP/insp")"
else
    bad "inspect placement: $(cat "$TMP/err") $(grep -E '^(layer|rank|total)' "$TMP/insp" | head -5)"
fi
if ! timeout 30 "$TRUSTMOE" inspect -m "$M" --workers 2 --placement "$TMP/hole.json" >/dev/null 2>"$TMP/err" &&
    grep -q "layer 2 expert 5 is hosted by no worker" "$TMP/err"; then
    ok "inspect with an unhosted expert fails: $(head -1 "$TMP/err")"
else
    bad "inspect with an unhosted expert"
fi
finish
