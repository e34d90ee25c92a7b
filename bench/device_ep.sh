#!/bin/bash
# Expert parallelism on one many-core host (bench/RESULTS.md, "Expert
# parallelism that pays").  Every model is built in memory (--synthetic).
#   bench/device_ep.sh OUTDIR sweep    one run of each layout, 48-layer omni30b, batch 1
#   bench/device_ep.sh OUTDIR pairs N  N paired rounds: old -np 1 -t 16, new -np 1 -t 16,
#                                      old -np 3 -t 5, new -np 3 in the chosen layout
#   bench/device_ep.sh OUTDIR pick     old -np 1 -t 16, layouts 12/2/0.75 and 14/1/0.875, old -np 1
#                                      -t 16 again, then the faster layout again
#   bench/device_ep.sh OUTDIR scale    batch 1 and 32, -np 1 2 3 5 9 in the chosen layout (that of
#                                      deploy/trustmoe-run.sh --local; RANK0_THREADS=A: rank 0 -t A,
#                                      the workers share the other cores)
#   bench/device_ep.sh OUTDIR runs NP:LAYOUT ...   one run of the new binary per NP:LAYOUT (NP 1: -t A)
# TRUSTMOE (new) and TRUSTMOE_OLD (the build before) name the binaries.
# A layout is "A/B/S": rank 0 runs -t A, each worker -t B, rank 0 hosts the
# share S of every layer's experts (--coordinator-share); the A + W*B threads
# fill the cores, so no rank's threads wait for another's.
# Each run leaves NAME.err (stderr) and NAME.json (--stats-json) in OUTDIR and
# one line in OUTDIR/summary.txt.
set -u
OUT=$1
PART=$2
T=${TRUSTMOE:-build/trustmoe}
TOLD=${TRUSTMOE_OLD:-$T}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
MPI=(mpirun --oversubscribe --bind-to none -x LD_LIBRARY_PATH -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS)
MODEL=${MODEL:-omni30b}
NEW=${NEW_TOKENS:-16}
mkdir -p "$OUT"
S=$OUT/summary.txt
ids() { python3 -c "print(','.join(str(($1 * 7919 + i * 104729) % ${VOCAB:-150000} + 1) for i in range($2)))"; }
P8=$(ids 1 "${PROMPT_LEN:-8}") # PROMPT_LEN: the batch-1 prompt's ids [8]
for i in $(seq 32); do ids "$i" 8; done >"$OUT/p32"
for i in $(seq 16); do ids "$i" 8; done >"$OUT/p16"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt" >&2; }

# one NAME BIN NP LAYOUT [extra trustmoe or mpirun args via MCA=...]: a generate run
one() {
    local name=$1 bin=$2 np=$3 layout=$4
    shift 4
    local a b s
    IFS=/ read -r a b s <<<"$layout"
    local gen=(generate --synthetic "$MODEL" -n "$NEW" --temp 0 --comm-timeout 120 --stats-json "$OUT/$name.json" "$@")
    [ -n "${PROMPTS:-}" ] && gen+=(--prompts "$PROMPTS") || gen+=(--ids "$P8")
    local t0=$SECONDS
    if [ "$np" = 1 ]; then
        timeout 200 "$bin" "${gen[@]}" -t "$a" >/dev/null 2>"$OUT/$name.err"
    elif [ "$s" = 0 ] && [ "$bin" = "$TOLD" ]; then
        timeout 200 "${MPI[@]}" ${MCA:-} -np 1 "$bin" "${gen[@]}" -t "$a" : -np $((np - 1)) "$bin" "${gen[@]}" -t "$b" \
            >/dev/null 2>"$OUT/$name.err"
    else
        timeout 200 "${MPI[@]}" ${MCA:-} -np 1 "$bin" "${gen[@]}" -t "$a" --coordinator-share "$s" : \
            -np $((np - 1)) "$bin" "${gen[@]}" -t "$b" --coordinator-share "$s" >/dev/null 2>"$OUT/$name.err"
    fi
    local rc=$?
    local line
    line=$(python3 - "$OUT/$name.json" <<'PY'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception as e:
    print("no stats"); sys.exit()
d, pl = j["decode"], j["per_layer_us"]
ms = 1e3 * d["seconds"] / max(d["tokens"], 1)
w = [r for r in j["ranks_detail"] if r.get("role") == "worker"]
comp = max((r["expert_compute_s"] / max(r["requests"], 1) for r in w), default=0) * 1e6
print(f"decode {ms:.2f} ms/token {d['tokens_per_second']:.2f} tok/s; per layer: wait {pl['dispatch_wait']:.1f} us, "
      f"slowest compute {pl.get('slowest_compute', comp):.1f} us, overhead mean "
      f"{pl.get('exchange_overhead', pl['dispatch_wait'] - comp):.1f} us, decode median "
      f"{pl.get('exchange_overhead_decode_median', float('nan')):.1f} us; prefill {j['prefill']['tokens_per_second']:.1f} tok/s")
PY
)
    echo "$name np=$np layout=$layout ${MCA:-} rc=$rc wall=$((SECONDS - t0))s: $line" | tee -a "$S" >&2
}

log "host: $(env -u OMP_NUM_THREADS nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GiB; $(mpirun --version 2>&1 | head -1)"

if [ "$PART" = sweep ]; then
    one old-np1-t16 "$TOLD" 1 16/0/0
    one new-np1-t16 "$T" 1 16/0/0
    one old-np3-t5 "$TOLD" 3 5/5/0
    one new-np3-t5 "$T" 3 5/5/0
    one new-np3-16-8-0 "$T" 3 16/8/0
    one new-np3-8-4-0.5 "$T" 3 8/4/0.5
    one new-np3-6-5-0.375 "$T" 3 6/5/0.375
    one new-np3-10-3-0.625 "$T" 3 10/3/0.625
    one new-np3-12-2-0.75 "$T" 3 12/2/0.75
    MCA="--mca btl tcp,self" one new-np3-8-4-0.5-tcp "$T" 3 8/4/0.5
    MCA="--mca btl tcp,self" one old-np3-t5-tcp "$TOLD" 3 5/5/0
fi

if [ "$PART" = pairs ]; then
    L=${LAYOUT:-8/4/0.5}
    for r in $(seq "${3:-3}"); do
        one "r$r-old-np1-t16" "$TOLD" 1 16/0/0
        one "r$r-new-np3-$L" "$T" 3 "$L"
        one "r$r-new-np1-t16" "$T" 1 16/0/0
        one "r$r-old-np3-t5" "$TOLD" 3 5/5/0
    done
fi

if [ "$PART" = pick ]; then
    one p1-old-np1-t16 "$TOLD" 1 16/0/0
    one p1-new-np3-12-2-0.75 "$T" 3 12/2/0.75
    one p1-new-np3-14-1-0.875 "$T" 3 14/1/0.875
    one p2-old-np1-t16 "$TOLD" 1 16/0/0
    tps() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['decode']['tokens_per_second'])" "$1" 2>/dev/null || echo 0; }
    a=$(tps "$OUT/p1-new-np3-12-2-0.75.json") b=$(tps "$OUT/p1-new-np3-14-1-0.875.json")
    if python3 -c "import sys; sys.exit(0 if float('$a') >= float('$b') else 1)"; then
        one p2-new-np3-12-2-0.75 "$T" 3 12/2/0.75
    else
        one p2-new-np3-14-1-0.875 "$T" 3 14/1/0.875
    fi
fi

if [ "$PART" = scale ]; then
    for bs in 1 32; do
        [ "$bs" = 32 ] && export PROMPTS=$OUT/p32
        one "b$bs-np1" "$T" 1 16/0/0
        for np in 2 3 5 9; do
            w=$((np - 1))
            if [ -n "${RANK0_THREADS:-}" ]; then
                a=$RANK0_THREADS
                b=$(((16 - a) / w))
                [ "$b" -lt 1 ] && b=1
            else # deploy/trustmoe-run.sh --local: workers -t 1, rank 0 the other cores
                a=$((16 - w)) b=1
            fi
            s=$(python3 -c "print(round($a / ($a + $w * $b), 3))")
            one "b$bs-np$np" "$T" "$np" "$a/$b/$s"
        done
        unset PROMPTS
    done
fi
if [ "$PART" = runs ]; then
    shift 2
    for spec in "$@"; do
        lay=${spec#*:}
        one "${RUN_PREFIX:-run}-np${spec%%:*}-${lay//\//-}" "$T" "${spec%%:*}" "$lay"
    done
fi
log "done"
