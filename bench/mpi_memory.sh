#!/bin/bash
# mpi_memory.sh: a worker's resident memory against the weight bytes of the
# experts it hosts, on a model with 128 experts per layer (BF16, mapped).
# Passes when every worker stays within 1.2x, after load and at the end.
#
#   bench/mpi_memory.sh [MODEL_DIR | synthetic:PRESET]
# (default: `trustmoe mkmodel --preset omni48-small`, 48 layers x 128 experts,
# in /tmp; bench/mpi_model.sh writes a smaller one where mkmodel is missing)
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
TRUSTMOE=${TRUSTMOE:-$BUILD/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
M=${1:-/tmp/trustmoe-bench-omni48-small}
model_args=(-m "$M")
if [[ $M == synthetic:* ]]; then
    # weights built in memory by each rank (trustmoe --synthetic), no files
    model_args=(--synthetic "${M#synthetic:}")
elif [ ! -f "$M/config.json" ]; then
    if "$TRUSTMOE" mkmodel --help >/dev/null 2>&1; then
        "$TRUSTMOE" mkmodel --preset omni48-small -o "$M" || exit 1
    else
        bash bench/mpi_model.sh "$M" 2 128 8 1024 512 || exit 1
    fi
fi
out=$(mktemp -d /tmp/trustmoe-mem.XXXXXX)
trap 'rm -rf "$out"' EXIT
fail=0
for np in 3 5; do
    if ! timeout -k 5 600 mpirun --oversubscribe -np $np "$TRUSTMOE" logits "${model_args[@]}" --ids 1,2,3,4,5,6,7,8 \
        -o "$out/l.f32" --stats-json "$out/s$np.json" 2>"$out/err$np"; then
        echo "FAIL -np $np: $(grep -m1 trustmoe "$out/err$np")"
        fail=1
        continue
    fi
    python3 - "$out/s$np.json" "$np" <<'PY' || fail=1
import json, sys
s = json.load(open(sys.argv[1]))
MiB = 2 ** 20
worst = 0
print(f"-np {sys.argv[2]} ({s['workers']} workers), placement {s['placement']}:")
print("  rank  experts  weights MiB  RSS before load  RSS after load  ratio  RSS at end  ratio")
for r in s["ranks_detail"]:
    if r["role"] != "worker": continue
    w = r["weight_bytes"]
    a, e = r["resident_bytes_after_load"] / w, r["resident_bytes"] / w
    worst = max(worst, a, e)
    print(f"  {r['rank']:4d}  {r['experts']:7d}  {w / MiB:11.1f}  {r['resident_bytes_before_load'] / MiB:15.1f}"
          f"  {r['resident_bytes_after_load'] / MiB:14.1f}  {a:5.3f}  {r['resident_bytes'] / MiB:10.1f}  {e:5.3f}")
print(f"  worst ratio {worst:.3f} (limit 1.2): {'ok' if worst <= 1.2 else 'FAIL'}")
sys.exit(0 if worst <= 1.2 else 1)
PY
done
exit $fail
