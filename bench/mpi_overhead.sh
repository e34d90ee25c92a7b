#!/bin/bash
# mpi_overhead.sh: what expert parallelism costs on one machine.  Runs greedy
# generation on a 48-layer MoE model with -np 1 and with -np 3 (2 workers),
# F32 and BF16 wire, and prints a markdown table: prefill and decode tokens/s,
# us per MoE layer in dispatch, dispatch wait and combine, bytes per token.
#
#   bench/mpi_overhead.sh [MODEL_DIR] [PROMPT_TOKENS] [NEW_TOKENS] [REPEATS]
# (default model: `trustmoe mkmodel --preset omni48-small`: 48 layers x 128
# experts, top-8, hidden 512, vocab 151936, in /tmp; bench/mpi_model.sh
# writes a 48 x 64, hidden 256 one where mkmodel is missing)
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
TRUSTMOE=${TRUSTMOE:-$BUILD/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
M=${1:-/tmp/trustmoe-bench-omni48-small}
P=${2:-32}
N=${3:-32}
R=${4:-3}
if [ ! -f "$M/config.json" ]; then
    if "$TRUSTMOE" mkmodel --help >/dev/null 2>&1; then
        "$TRUSTMOE" mkmodel --preset omni48-small -o "$M" || exit 1
    else
        bash bench/mpi_model.sh "$M" 48 64 8 256 128 || exit 1
    fi
fi
ids=$(python3 -c "print(','.join(str(3 + (i * 37) % 1000) for i in range($P)))")
out=$(mktemp -d /tmp/trustmoe-ovh.XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "model $M, prompt $P tokens, $N new tokens, best of $R runs; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo
echo "| run | prefill tok/s | decode tok/s | dispatch us/layer | wait us/layer | of which worker compute | combine us/layer | bytes/token (all layers) |"
echo "|---|---|---|---|---|---|---|---|"
for cfg in "1 f32" "3 f32" "3 bf16"; do
    set -- $cfg
    np=$1 dt=$2
    for r in $(seq "$R"); do
        if [ "$np" = 1 ]; then
            cmd=(timeout 600 "$TRUSTMOE")
        else
            cmd=(timeout -k 5 600 mpirun --oversubscribe -np "$np" "$TRUSTMOE")
        fi
        "${cmd[@]}" generate -m "$M" --ids "$ids" -n "$N" --temp 0 --json --wire-dtype "$dt" \
            --stats-json "$out/$np-$dt-$r.json" >"$out/$np-$dt-$r.out" 2>"$out/err" ||
            { echo "run -np $np $dt failed: $(grep -m1 trustmoe "$out/err")"; exit 1; }
    done
    python3 - "$np" "$dt" "$out" "$R" <<'PY'
import json, sys
np_, dt, d, R = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runs = [json.load(open(f"{d}/{np_}-{dt}-{r}.json")) for r in range(1, R + 1)]
best = max(runs, key=lambda s: s["decode"]["tokens_per_second"])
pl = best["per_layer_us"]
toks = best["prefill"]["tokens"] + best["decode"]["tokens"]
bpt = (best["bytes"]["sent"] + best["bytes"]["received"]) / toks if toks else 0
name = "-np 1 (local)" if np_ == "1" else f"-np {np_}, wire {dt}"
calls = max(best["moe_layer_calls"], 1)
workers = [r for r in best["ranks_detail"] if r["role"] == "worker"]
comp = max((r["expert_compute_s"] for r in workers), default=0) / calls * 1e6
local = best["time_s"]["expert_compute_local"] / calls * 1e6
cw = f"{comp:.1f} (slowest worker)" if workers else f"({local:.1f} local)"
print(f"| {name} | {best['prefill']['tokens_per_second']:.1f} | {best['decode']['tokens_per_second']:.1f} | "
      f"{pl['dispatch']:.1f} | {pl['dispatch_wait']:.1f} | {cw} | {pl['combine']:.1f} | {bpt:.0f} |")
PY
done
