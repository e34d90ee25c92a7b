#!/usr/bin/env bash
# bench/trust_quality.sh: the trust-quality measurements on models/brown-moe:
# the absolute and advantage quality signals side by side, counterfactual
# importance, and substitutes for masked experts.
#
#   bench/trust_quality.sh [OUTDIR]          (default build/trust-quality)
#
# 1. The document split of bench/trust_eval.sh (documents 1-12 train,
#    13-25 eval), one fit-contexts, then `trust train` twice from it:
#    --signal absolute -> abs.db, --signal advantage -> adv.db (EPOCHS,
#    WINDOW).  Both also fit substitutes and count co-selections.
# 2. `trust importance` on the eval half (IMP_WINDOWS windows): the loss
#    change of dropping each (layer, expert) from every token's top-k.
# 3. Spearman per (context, layer) of each signal's trust against the
#    routing credit and against the importance -> OUTDIR/spearman.json.
# 4. eval of router, blend at each of ALPHAS and trust-first with each
#    database -> OUTDIR/signals.json.
# 5. Masks: each quarter of the experts (every layer) and 1/8 at random
#    per layer (seeds 1-3); eval with --substitute router and learned
#    (abs.db's table) -> OUTDIR/masks.json.
# Then bench/trust_quality_plot.py draws the PNGs (needs matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/trust-quality}
MODEL=${MODEL:-models/brown-moe}
CONTEXTS=${CONTEXTS:-4}
EPOCHS=${EPOCHS:-2}
WINDOW=${WINDOW:-256}
ALPHAS=${ALPHAS:-"0.95 0.9 0.8 0.7 0.5"}
IMP_WINDOWS=${IMP_WINDOWS:-16}
MAX_WINDOWS=${MAX_WINDOWS:-0}

[ -x build/trustmoe ] || make build/trustmoe
mkdir -p "$OUT"
cp build/trustmoe "$OUT/trustmoe"
BIN="$OUT/trustmoe"
MW=()
[ "$MAX_WINDOWS" != 0 ] && MW=(--max-windows "$MAX_WINDOWS")

awk 'BEGIN { RS = ""; ORS = "\n\n" } NR <= 12' "$MODEL/heldout.txt" >"$OUT/trust-train.txt"
awk 'BEGIN { RS = ""; ORS = "\n\n" } NR > 12' "$MODEL/heldout.txt" >"$OUT/trust-eval.txt"

# 1. contexts once, then one database per signal
rm -f "$OUT"/*.db "$OUT"/*.db-wal "$OUT"/*.db-shm
"$BIN" trust fit-contexts -m "$MODEL" --corpus "$OUT/trust-train.txt" --trust-db "$OUT/ctx.db" \
    --contexts "$CONTEXTS" --window "$WINDOW" >"$OUT/fit-contexts.txt"
for sig in abs adv; do
    cp "$OUT/ctx.db" "$OUT/$sig.db"
    name=absolute
    [ $sig = adv ] && name=advantage
    "$BIN" trust train -m "$MODEL" --corpus "$OUT/trust-train.txt" --trust-db "$OUT/$sig.db" --signal $name \
        --epochs "$EPOCHS" --window "$WINDOW" "${MW[@]}" >"$OUT/train-$sig.txt" 2>"$OUT/train-$sig.err"
    "$BIN" trust dump --trust-db "$OUT/$sig.db" >"$OUT/dump-$sig.txt"
    echo "train $sig: $(head -2 "$OUT/train-$sig.txt" | tr '\n' ' ')"
done

# 2. counterfactual importance on held-out windows
"$BIN" trust importance -m "$MODEL" --corpus "$OUT/trust-eval.txt" --trust-db "$OUT/ctx.db" --window "$WINDOW" \
    --max-windows "$IMP_WINDOWS" >"$OUT/importance.txt" 2>"$OUT/importance.err"
cat "$OUT/importance.err"

run_eval() { # NAME DB ARGS...
    local name=$1 db=$2
    shift 2
    "$BIN" eval -m "$MODEL" --corpus "$OUT/trust-eval.txt" --trust-db "$db" --window "$WINDOW" "${MW[@]}" \
        --stats-json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
    echo "$name: $(head -1 "$OUT/$name.txt")"
}

# 4. the selection table with either signal
run_eval router "$OUT/abs.db" --select router
for sig in abs adv; do
    for a in $ALPHAS; do run_eval "$sig-blend-$a" "$OUT/$sig.db" --select blend --alpha "$a"; done
    run_eval "$sig-trust-first" "$OUT/$sig.db" --select trust-first --min-evidence 2 --epsilon 0
done

# 5. masks
E=$(python3 -c "import json;print(json.load(open('$MODEL/config.json'))['num_experts'])")
L=$(python3 -c "import json;print(json.load(open('$MODEL/config.json'))['num_hidden_layers'])")
MASKS=()
for q in 0 1 2 3; do
    python3 -c "
E, q = $E, $q
for e in range(q * E // 4, (q + 1) * E // 4): print('*', e)" >"$OUT/mask-q$q.txt"
    MASKS+=(q$q)
done
for seed in 1 2 3; do
    python3 -c "
import random
r = random.Random($seed)
for l in range($L):
    for e in sorted(r.sample(range($E), $E // 8)): print(l, e)" >"$OUT/mask-r$seed.txt"
    MASKS+=(r$seed)
done
for mk in "${MASKS[@]}"; do
    run_eval "mask-$mk-router" "$OUT/abs.db" --select router --mask "$OUT/mask-$mk.txt"
    run_eval "mask-$mk-learned" "$OUT/abs.db" --select router --mask "$OUT/mask-$mk.txt" --substitute learned
done

python3 bench/trust_quality_report.py "$OUT"
PY=python3
"$PY" -c 'import matplotlib' 2>/dev/null || PY=/usr/bin/python3
if "$PY" -c 'import matplotlib' 2>/dev/null; then
    "$PY" bench/trust_quality_plot.py "$OUT"
else
    echo "matplotlib not found: plots skipped (apt-get install -y python3-matplotlib)" >&2
fi
