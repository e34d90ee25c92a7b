#!/bin/bash
# The wire: --wire-dtype bf16 stays within 1e-2 relative of -np 1 (and the
# error is printed); the checksum (on by default) changes no bit of the answer
# against --no-wire-checksum; bytes per
# token per layer stay within the design bound
#   2 * min(k, workers) * hidden * dtype size  (+ routing pairs and headers).
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

for fx in $FIXTURES; do
    M=$FIX/$fx
    V=$(vocab_of "$fx")
    p=$(($(n_prompts "$fx") - 1))
    ids=$(prompt_ids "$fx" "$p")
    timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$TMP/ref.f32" 2>/dev/null || { bad "$fx: -np 1 failed"; continue; }
    for dt in f32 bf16; do
        for ck in "" --no-wire-checksum; do
            tag=$dt${ck:+-nock}
            if ! tm_mpirun 120 3 logits -m "$M" --ids "$ids" -o "$TMP/$tag.f32" --wire-dtype $dt $ck \
                --stats-json "$TMP/$tag.json" 2>"$TMP/err"; then
                bad "$fx wire $tag: run failed: $(grep -m1 trustmoe "$TMP/err")"
                continue
            fi
            tol=1e-5
            [ $dt = bf16 ] && tol=1e-2
            if msg=$(compare_logits "$TMP/ref.f32" "$TMP/$tag.f32" "$V" $tol); then
                ok "$fx -np 3 wire $tag vs -np 1: $msg"
            else
                bad "$fx -np 3 wire $tag vs -np 1: $msg"
            fi
            if msg=$(python3 - "$TMP/$tag.json" "$M/config.json" "$dt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))
c = c.get("thinker_config", {}).get("text_config", c)
H, k, L = c["hidden_size"], c["num_experts_per_tok"], c["num_hidden_layers"]
moe_layers = L - len(c.get("mlp_only_layers", []))
W, dts = s["workers"], 4 if sys.argv[3] == "f32" else 2
T = s["prefill"]["tokens"]
per = (s["bytes"]["sent"] + s["bytes"]["received"]) / (T * moe_layers)
bound = 2 * min(k, W) * H * dts
slack = min(k, W) * k * 8 + 2 * 64 * W / T  # routing pairs, one header per message each way
print(f"{per:.0f} bytes per token per MoE layer, bound {bound} + {slack:.0f} for pairs and headers")
sys.exit(0 if per <= bound + slack else 1)
PY
            ); then ok "$fx wire $tag: $msg"; else bad "$fx wire $tag: $msg"; fi
        done
        if cmp -s "$TMP/$dt.f32" "$TMP/$dt-nock.f32"; then
            ok "$fx wire $dt: the checksum gives bitwise the same logits as --no-wire-checksum"
        else
            bad "$fx wire $dt: the checksum changes the logits"
        fi
        if python3 -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); sys.exit(not(a["wire_checksum"] is True and b["wire_checksum"] is False))' \
            "$TMP/$dt.json" "$TMP/$dt-nock.json"; then
            ok "$fx wire $dt: the checksum is on by default and off with --no-wire-checksum"
        else
            bad "$fx wire $dt: wire_checksum in the statistics is not true by default and false with --no-wire-checksum"
        fi
    done
done
finish
