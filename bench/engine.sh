#!/bin/bash
# Engine benchmarks on omni48-small (48 layers, 128 experts, top-8, hidden 512):
#   roofline  decode at batch 1 against bytes per token / measured read bandwidth
#   prefill   128 prompt tokens against the machine's cblas_sgemm rate
#   batching  decode tokens/s at batch 1, 4, 16, 64, single process and -np 3
# usage: bench/engine.sh [THREADS] [RUNS]     (prints markdown tables)
set -euo pipefail
cd "$(dirname "$0")/.."
TH=${1:-1}
RUNS=${2:-3}
B=${BUILD:-build}
T=$B/trustmoe
M=$B/omni48-small
make -s "$T" "$B/bench/bench_kernels"
[ -f "$M/config.json" ] || $T mkmodel --preset omni48-small -o "$M" >&2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=$TH
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

bw=$("$B/bench/bench_kernels" -t "$TH" -r 5 -s bw | sed -n 's/^read bandwidth ([0-9]* threads*): \([0-9.]*\) GB\/s.*/\1/p')
sgemm=$("$B/bench/bench_kernels" -t "$TH" -r 3 -s gemm | awk '/M 1024 N 1024 K 1024/ {print $NF; exit}')

# median of a JSON field over RUNS runs of a command
median_of() { # FIELD CMD...
    local field=$1; shift
    for _ in $(seq "$RUNS"); do "$@" 2>/dev/null; done | python3 -c '
import json, statistics, sys
vals = [eval("d" + sys.argv[1], {"d": json.loads(l)}) for l in sys.stdin if l.strip()]
print(statistics.median(vals))' "$field"
}

python3 - "$M/config.json" >"$W/bytes" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
H, L, V, E, K = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["num_experts"], c["num_experts_per_tok"]
D, nh, nkv, I = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], c["moe_intermediate_size"]
attn = (2 * nh * D * H + 2 * nkv * D * H) * 2
router = E * H * 2
experts = K * 3 * H * I * 2
head = V * H * 2
ctx = 40  # mean context over a 8-token prompt and 64 new tokens
kv = L * 2 * ctx * nkv * D * 4
print(L * (attn + router + experts) + head + kv)
print(2 * 128 * K * 3 * H * I * L)  # expert FLOPs of a 128-token prefill
PY
bytes=$(sed -n 1p "$W/bytes")
pflops=$(sed -n 2p "$W/bytes")

ids8=$(seq -s, 101 108)
dec=$(median_of "['timings']['decode_ms_per_token']" $T generate -m "$M" --ids "$ids8" -n 64 --temp 0 --json -t "$TH")
ids128=$(python3 -c "print(','.join(str(i * 7919 % 150000) for i in range(1, 129)))")
pre=$(median_of "['timings']['split_ms']['experts']" $T generate -m "$M" --ids "$ids128" -n 1 --temp 0 --json -t "$TH")
pre_all=$(median_of "['timings']['prefill_ms']" $T generate -m "$M" --ids "$ids128" -n 1 --temp 0 --json -t "$TH")

python3 - "$bytes" "$bw" "$dec" "$pflops" "$pre" "$pre_all" "$sgemm" "$TH" <<'PY'
import sys
b, bw, dec, fl, pre, pre_all, sg, th = map(float, sys.argv[1:])
need = b / (bw * 1e9) * 1e3
print(f"### Roofline: decode at batch 1, {int(th)} thread(s)\n")
print("| bytes per token | read bandwidth | bytes / bandwidth | measured ms/token | achieved GB/s | ratio |")
print("|---|---|---|---|---|---|")
print(f"| {b/1e6:.1f} MB | {bw:.1f} GB/s | {need:.2f} ms | {dec:.2f} ms | {b/dec/1e6:.1f} | {need/dec:.2f} |\n")
print(f"### Prefill: 128 tokens, {int(th)} thread(s)\n")
print("| expert GFLOP | expert time | expert GFLOP/s | cblas_sgemm GFLOP/s (1024^3) | ratio | whole prefill |")
print("|---|---|---|---|---|---|")
print(f"| {fl/1e9:.2f} | {pre:.1f} ms | {fl/pre/1e6:.1f} | {sg:.1f} | {fl/pre/1e6/sg:.2f} | {pre_all:.1f} ms ({128/pre_all*1e3:.1f} tok/s) |\n")
PY

echo "### Batching: decode tokens/s (all sequences), $TH thread(s) per rank"
echo
echo "| batch | -np 1 | -np 3 (2 workers) |"
echo "|---|---|---|"
for bs in 1 4 16 64; do
    python3 -c "
for i in range($bs): print(','.join(str((i * 131 + j * 17) % 150000 + 1) for j in range(8)))" >"$W/prompts"
    one=$(median_of "['timings']['tokens_per_second']" $T generate -m "$M" --prompts "$W/prompts" -n 32 --temp 0 --json -t "$TH")
    three=$(median_of "['timings']['tokens_per_second']" timeout 600 mpirun --oversubscribe -np 3 $T generate -m "$M" \
        --prompts "$W/prompts" -n 32 --temp 0 --json)
    printf '| %d | %.1f | %.1f |\n' "$bs" "$one" "$three"
done
