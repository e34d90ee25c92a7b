#!/usr/bin/env bash
# bench/coactivation.sh: the co-activation placement against
# contiguous, round-robin and balanced, with 4 workers (mpirun -np 5).
#
#   bench/coactivation.sh [OUTDIR]          (default build/coactivation)
#
# brown-moe: the co-selection counts come from `eval` (router) on the
# training half of heldout.txt (documents 1-12, as bench/trust_eval.sh);
# the distributed runs generate N_PREDICT tokens (greedy) after prompts of
# the first 1500 bytes of eval documents 13, 18 and 23.  The synthetic
# model (mkmodel preset tiny: 4 layers, 16 experts, top-4, random weights)
# takes its counts from 8192 seeded random token ids and runs prompts of 300
# other random ids.  Every run's --stats-json is kept; OUTDIR/placement.json
# sums them up (fan-out, messages and bytes per token, load balance).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/coactivation}
N_PREDICT=${N_PREDICT:-32}
[ -x build/trustmoe ] || make build/trustmoe
mkdir -p "$OUT"
cp build/trustmoe "$OUT/trustmoe"
BIN="$OUT/trustmoe"
MPI=(timeout -k 5 300 mpirun --oversubscribe -np 5)

balanced_from() { # co_selection stats -> {"expert_tokens": diagonal}
    python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
json.dump({'expert_tokens': [[row[e] for e, row in enumerate(l)] for l in d['co_selection']]}, open(sys.argv[2], 'w'))
" "$1" "$2"
}

# brown-moe
M=models/brown-moe
awk 'BEGIN { RS = ""; ORS = "\n\n" } NR <= 12' $M/heldout.txt >"$OUT/brown-train.txt"
"$BIN" eval -m $M --corpus "$OUT/brown-train.txt" --window 256 --stats-json "$OUT/brown-stats.json" >/dev/null 2>&1
balanced_from "$OUT/brown-stats.json" "$OUT/brown-load.json"
for doc in 13 18 23; do
    # (through a file: under pipefail, awk's SIGPIPE when head stops reading would end the script)
    awk -v d=$doc 'BEGIN { RS = ""; ORS = "\n\n" } NR == d' $M/heldout.txt >"$OUT/brown-doc-$doc.txt"
    head -c 1500 "$OUT/brown-doc-$doc.txt" >"$OUT/brown-prompt-$doc.txt"
done
for pl in contiguous round-robin balanced coactivation; do
    case $pl in
    balanced) arg=balanced:$OUT/brown-load.json ;;
    coactivation) arg=coactivation:$OUT/brown-stats.json ;;
    *) arg=$pl ;;
    esac
    for doc in 13 18 23; do
        "${MPI[@]}" "$BIN" generate -m $M -p "$(cat "$OUT/brown-prompt-$doc.txt")" -n "$N_PREDICT" --temp 0 \
            --placement "$arg" --stats-json "$OUT/brown-$pl-$doc.json" >/dev/null 2>"$OUT/brown-$pl-$doc.err"
    done
    echo "brown-moe $pl: $(grep fan-out "$OUT/brown-$pl-13.err")"
done

# synthetic: random weights, random ids
python3 -c "
import random
r = random.Random(17)
print(','.join(str(r.randrange(512)) for _ in range(8192)))" >"$OUT/synth-train.ids"
"$BIN" eval --synthetic tiny --corpus "$OUT/synth-train.ids" --window 256 --stats-json "$OUT/synth-stats.json" \
    >/dev/null 2>&1
balanced_from "$OUT/synth-stats.json" "$OUT/synth-load.json"
for s in 1 2 3; do
    python3 -c "
import random
r = random.Random(1000 + $s)
print(','.join(str(r.randrange(512)) for _ in range(200)))" >"$OUT/synth-prompt-$s.ids"
done
for pl in contiguous round-robin balanced coactivation; do
    case $pl in
    balanced) arg=balanced:$OUT/synth-load.json ;;
    coactivation) arg=coactivation:$OUT/synth-stats.json ;;
    *) arg=$pl ;;
    esac
    for s in 1 2 3; do
        "${MPI[@]}" "$BIN" generate --synthetic tiny --ids "$(cat "$OUT/synth-prompt-$s.ids")" -n "$N_PREDICT" \
            --temp 0 --placement "$arg" --stats-json "$OUT/synth-$pl-$s.json" >/dev/null 2>"$OUT/synth-$pl-$s.err"
    done
    echo "synthetic $pl: $(grep fan-out "$OUT/synth-$pl-1.err")"
done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
res = {}
for model, runs in (("brown", (13, 18, 23)), ("synth", (1, 2, 3))):
    for pl in ("contiguous", "round-robin", "balanced", "coactivation"):
        ds = [json.load(open(f"{out}/{model}-{pl}-{r}.json")) for r in runs]
        toks = sum(d["prefill"]["tokens"] + d["decode"]["tokens"] for d in ds)
        res[f"{model}/{pl}"] = dict(
            fanout=sum(d["fanout"]["workers_per_token_layer"] for d in ds) / len(ds),
            messages_per_token=sum(d["fanout"]["messages"] for d in ds) / toks,
            bytes_per_token=sum(d["bytes"]["sent"] + d["bytes"]["received"] for d in ds) / toks,
            load_imbalance=max(d["load_imbalance"] for d in ds),
            tokens=toks)
json.dump(res, open(f"{out}/placement.json", "w"), indent=1)
for model in ("brown", "synth"):
    base = res[f"{model}/contiguous"]
    print(f"| {model} placement | workers per (token, layer) | vs contiguous | messages per token | bytes per token | max/mean expert-tokens |")
    print("|---|---|---|---|---|---|")
    for pl in ("contiguous", "round-robin", "balanced", "coactivation"):
        r = res[f"{model}/{pl}"]
        print(f"| {pl} | {r['fanout']:.3f} | {100 * (r['fanout'] / base['fanout'] - 1):+.1f}% | "
              f"{r['messages_per_token']:.2f} | {r['bytes_per_token']:.0f} | {r['load_imbalance']:.3f} |")
    print()
PY
PY=python3
"$PY" -c 'import matplotlib' 2>/dev/null || PY=/usr/bin/python3
if "$PY" -c 'import matplotlib' 2>/dev/null; then
    "$PY" bench/trust_quality_plot.py --coactivation "$OUT"
else
    echo "matplotlib not found: plot skipped (apt-get install -y python3-matplotlib)" >&2
fi
