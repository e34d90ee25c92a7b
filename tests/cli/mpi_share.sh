#!/bin/bash
# Rank 0 hosting a share of the experts (--coordinator-share, or rank 0 in a
# placement file): logits of -np 2, 3, 5 match -np 1 within 1e-5 x max|logit|
# with the same argmax; two runs with the same -np and placement are bitwise
# identical; greedy decode (the one-token path) gives the -np 1 ids; the
# summary splits the wait into compute and exchange overhead.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

for fx in $FIXTURES; do
    M=$FIX/$fx
    V=$(vocab_of "$fx")
    ids=$(prompt_ids "$fx" $(($(n_prompts "$fx") - 1)))
    ref=$TMP/$fx.np1.f32
    if ! timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$ref" 2>"$TMP/err"; then
        bad "$fx: single-process logits failed: $(tail -1 "$TMP/err")"
        continue
    fi
    for cfgline in "2 contiguous 1 0.5" "3 round-robin 2 0.3" "5 contiguous 1 0.2" "3 contiguous 1 1"; do
        set -- $cfgline
        np=$1 pol=$2 rep=$3 share=$4
        what="-np $np $pol replicas $rep coordinator share $share"
        out=$TMP/$fx.np$np.$pol.$rep.$share.f32
        if ! tm_mpirun 120 "$np" logits -m "$M" --ids "$ids" -o "$out" --placement "$pol" --replicas "$rep" \
            --coordinator-share "$share" --comm-timeout 30 2>"$TMP/err"; then
            bad "$fx $what: run failed: $(grep -m1 trustmoe "$TMP/err")"
            continue
        fi
        if msg=$(compare_logits "$ref" "$out" "$V" 1e-5); then
            ok "$fx $what: $msg"
        else
            bad "$fx $what: $msg"
        fi
    done
    out2=$TMP/$fx.again.f32
    if tm_mpirun 120 3 logits -m "$M" --ids "$ids" -o "$out2" --placement round-robin --replicas 2 \
        --coordinator-share 0.3 2>"$TMP/err" && cmp -s "$TMP/$fx.np3.round-robin.2.0.3.f32" "$out2"; then
        ok "$fx: two -np 3 runs with a coordinator share are bitwise identical"
    else
        bad "$fx: two -np 3 runs with a coordinator share differ"
    fi
    g_ids=$(prompt_ids "$fx" 1)
    if timeout 60 "$TRUSTMOE" generate -m "$M" --ids "$g_ids" -n 8 --temp 0 --json >"$TMP/g1.json" 2>/dev/null &&
        tm_mpirun 120 3 generate -m "$M" --ids "$g_ids" -n 8 --temp 0 --json --coordinator-share 0.5 \
            --stats-json "$TMP/s.json" >"$TMP/g3.json" 2>"$TMP/err" &&
        [ "$(json_ids "$TMP/g3.json")" = "$(json_ids "$TMP/g1.json")" ]; then
        ok "$fx: greedy ids with -np 3, coordinator share 0.5 equal -np 1 ($(json_ids "$TMP/g1.json"))"
    else
        bad "$fx: greedy ids with a coordinator share: '$(json_ids "$TMP/g3.json" 2>/dev/null)' vs '$(json_ids "$TMP/g1.json" 2>/dev/null)'"
    fi
    # the stats: rank 0's experts, and wait = slowest compute + overhead per call
    if python3 - "$TMP/s.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
pl, r0 = j["per_layer_us"], j["ranks_detail"][0]
assert r0["experts"] > 0 and r0["expert_tokens"] > 0, r0
assert abs(pl["dispatch_wait"] - pl["slowest_compute"] - pl["exchange_overhead"]) < 1e-6 * max(1, pl["dispatch_wait"]), pl
assert pl["slowest_compute"] > 0 and pl["decode_calls"] > 0, pl
PY
    then
        ok "$fx: stats report rank 0's experts and split the wait into compute and overhead"
    else
        bad "$fx: stats of a run with a coordinator share"
    fi
done

# a placement file may name rank 0
M=$FIX/qwen3moe-bf16
V=$(vocab_of qwen3moe-bf16)
ids=$(prompt_ids qwen3moe-bf16 1)
python3 - "$M/config.json" "$TMP/p0.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
L, E = c["num_hidden_layers"], c["num_experts"]
json.dump({"workers": 2, "experts": [[l, e, e % 3] for l in range(L) for e in range(E)]}, open(sys.argv[2], "w"))
PY
timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$TMP/ref.f32" 2>/dev/null
if tm_mpirun 120 3 logits -m "$M" --ids "$ids" -o "$TMP/file.f32" --placement "$TMP/p0.json" -v 2>"$TMP/err" &&
    grep -q "rank 0 (.*): [0-9]* experts" "$TMP/err" && msg=$(compare_logits "$TMP/ref.f32" "$TMP/file.f32" "$V" 1e-5); then
    ok "placement file naming rank 0: $msg"
else
    bad "placement file naming rank 0: $(grep -m1 trustmoe "$TMP/err") ${msg:-}"
fi

# a prefill long enough that rank 0 packs the workers' rows and adds their
# replies on its thread pool (32 rows and more): the same bits at -t 1 and
# -t 2, and -np 1's logits within 1e-5
ids=$(python3 -c 'print(",".join(str((37 * i + 11) % 512) for i in range(96)))')
timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$TMP/long1.f32" 2>/dev/null
for t in 1 2; do
    tm_mpirun 120 3 logits -m "$M" --ids "$ids" -o "$TMP/long3.t$t.f32" --placement round-robin --replicas 2 \
        --coordinator-share 0.3 -t "$t" 2>"$TMP/err.t$t" || bad "96-token prefill at -np 3 -t $t: $(grep -m1 trustmoe "$TMP/err.t$t")"
done
if cmp -s "$TMP/long3.t1.f32" "$TMP/long3.t2.f32" && msg=$(compare_logits "$TMP/long1.f32" "$TMP/long3.t2.f32" "$V" 1e-5); then
    ok "96-token prefill at -np 3: -t 1 and -t 2 bitwise identical, against -np 1: $msg"
else
    bad "96-token prefill at -np 3: -t 1 and -t 2 differ, or against -np 1: ${msg:-no logits}"
fi
finish
