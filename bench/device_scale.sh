#!/bin/bash
# Scale runs for a many-core host (recorded in bench/RESULTS.md, "Scale").
#   bench/device_scale.sh OUTDIR a   bandwidth, sgemm, roofline, prefill, batching, -np 3 overhead
#   bench/device_scale.sh OUTDIR b   worker scaling on omni48-small, omni30b with 1 + 14 ranks
#   bench/device_scale.sh OUTDIR r   bandwidth, sgemm, roofline, prefill and -np 3 overhead only
# Every model is built in memory (--synthetic), so no checkpoint is needed.
# TRUSTMOE / BENCH_KERNELS name the binaries (default build/...); each step
# appends one JSON line to OUTDIR/results.jsonl and keeps going on failure.
set -u
OUT=$1
PART=$2
T=${TRUSTMOE:-build/trustmoe}
BK=${BENCH_KERNELS:-build/bench/bench_kernels}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPI=(mpirun --oversubscribe --bind-to none -x LD_LIBRARY_PATH -x OPENBLAS_NUM_THREADS)
mkdir -p "$OUT"
R=$OUT/results.jsonl
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt" >&2; }
ids() { python3 -c "print(','.join(str(($1 * 7919 + i * 104729) % 150000 + 1) for i in range($2)))"; }
prompts() { # N LEN FILE
    for i in $(seq "$1"); do ids "$i" "$2"; done >"$3"
}
# run NAME CMD...: the command's last stdout line (JSON) tagged with NAME
run() {
    local name=$1; shift
    local t0=$SECONDS
    local out
    out=$(timeout 300 "$@" 2>>"$OUT/stderr.txt" | tail -1)
    local rc=$?
    if [ -n "$out" ] && python3 -c "import json,sys; json.loads(sys.argv[1])" "$out" 2>/dev/null; then
        echo "{\"name\": \"$name\", \"wall_s\": $((SECONDS - t0)), \"result\": $out}" >>"$R"
        log "$name: ok ($((SECONDS - t0)) s)"
    else
        echo "{\"name\": \"$name\", \"failed\": $rc}" >>"$R"
        log "$name: FAILED rc=$rc"
    fi
}

if [ "$PART" = a ] || [ "$PART" = r ]; then
    log "host: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GiB"
    log "mpirun: $(mpirun --version 2>&1 | head -1)"
    ldd "$T" | grep "not found" | tee -a "$OUT/log.txt"
    for th in 1 16; do
        "$BK" -t $th -r 5 -s bw,gemm >"$OUT/kernels_t$th.txt" 2>&1
        log "kernels -t $th: $(grep 'read bandwidth' "$OUT/kernels_t$th.txt" | head -1)"
    done
    prompts 1 8 "$OUT/p1"
    p8=$(cat "$OUT/p1")
    p128=$(ids 3 128)
    for th in 1 16; do
        for rep in 1 2 3; do
            run "roofline-t$th-$rep" "$T" generate --synthetic omni48-small --ids "$p8" -n 48 --temp 0 --json -t $th
        done
        run "prefill128-t$th" "$T" generate --synthetic omni48-small --ids "$p128" -n 1 --temp 0 --json -t $th
    done
    for bs in 1 4 16 64; do
        [ "$PART" = r ] && break
        prompts $bs 8 "$OUT/pb$bs"
        run "batch$bs-np1" "$T" generate --synthetic omni48-small --prompts "$OUT/pb$bs" -n 24 --temp 0 --json -t 1
        run "batch$bs-np3" "${MPI[@]}" -np 3 "$T" generate --synthetic omni48-small --prompts "$OUT/pb$bs" -n 24 \
            --temp 0 --json
    done
    for rep in 1 2 3; do
        run "overhead-np1-$rep" "$T" generate --synthetic omni48-small --ids "$p8" -n 48 --temp 0 --json -t 1 \
            --stats-json "$OUT/ov-np1-$rep.json"
        for wd in f32 bf16; do
            run "overhead-np3-$wd-$rep" "${MPI[@]}" -np 3 "$T" generate --synthetic omni48-small --ids "$p8" -n 48 \
                --temp 0 --json --wire-dtype $wd --stats-json "$OUT/ov-np3-$wd-$rep.json"
        done
    done
fi

if [ "$PART" = b ]; then
    prompts 32 8 "$OUT/p32"
    for w in 1 2 4 8 14; do
        run "scale-w$w" "${MPI[@]}" -np $((w + 1)) "$T" generate --synthetic omni48-small --prompts "$OUT/p32" -n 16 \
            --temp 0 --json --stats-json "$OUT/scale-w$w.json"
    done
    prompts 16 8 "$OUT/p16"
    p8=$(ids 1 8)
    run "omni30b-b1" "${MPI[@]}" -np 15 "$T" generate --synthetic omni30b --ids "$p8" -n 8 --temp 0 --json \
        --comm-timeout 120 --stats-json "$OUT/omni30b-b1.json"
    run "omni30b-b16" "${MPI[@]}" -np 15 "$T" generate --synthetic omni30b --prompts "$OUT/p16" -n 8 --temp 0 \
        --json --comm-timeout 120 --stats-json "$OUT/omni30b-b16.json"
fi
log "done"
