#!/bin/bash
# The server under concurrent clients on one many-core host (bench/RESULTS.md,
# "Server: throughput and latency against concurrent clients").  For each
# layout it starts `trustmoe serve` on a model built in memory, runs
# bench/serve_load.py against it, and stops it with SIGTERM.
#   bench/device_serve.sh OUTDIR [LAYOUT ...]
# A layout is "NP/A/B/S" as in bench/device_ep.sh: NP ranks, rank 0 -t A, each
# worker -t B, rank 0 hosting the share S of every layer's experts
# (default layouts: 1/16/0/0 and 3/14/1/0.875).
# Environment: TRUSTMOE [build/trustmoe], MODEL [omni30b], CLIENTS [1,4,16,64],
# PROMPT_LEN [16], OUT_LEN [32], VOCAB: prompt ids below it [150000], SERVE_ARGS: more serve flags
# (e.g. "--batch-wait 0"), TAG: appended to the names of the output files.
# Leaves OUTDIR/serve_LAYOUT.jsonl (one line per client count), the server's
# stderr in OUTDIR/serve_LAYOUT.err and a log in OUTDIR/log.txt.
set -u
OUT=$1
shift
LAYOUTS=("$@")
[ ${#LAYOUTS[@]} -eq 0 ] && LAYOUTS=(1/16/0/0 3/14/1/0.875)
T=${TRUSTMOE:-build/trustmoe}
MODEL=${MODEL:-omni30b}
HERE=$(cd "$(dirname "$0")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
MPI=(mpirun --oversubscribe --bind-to none -x LD_LIBRARY_PATH -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS)
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt" >&2; }

for layout in "${LAYOUTS[@]}"; do
    IFS=/ read -r np a b s <<<"$layout"
    name=serve_np${np}_${a}_${b}_${s}${TAG:-}
    pf=$OUT/$name.port
    rm -f "$pf"
    srv=(serve --synthetic "$MODEL" --port 0 --port-file "$pf" --max-seqs 64 --max-queue 64 -c 256
         --comm-timeout 300)
    # shellcheck disable=SC2206
    srv+=(${SERVE_ARGS:-})
    log "$name: starting"
    if [ "$np" = 1 ]; then
        "$T" "${srv[@]}" -t "$a" 2>"$OUT/$name.err" &
    else
        "${MPI[@]}" -np 1 "$T" "${srv[@]}" -t "$a" --coordinator-share "$s" : \
            -np $((np - 1)) "$T" "${srv[@]}" -t "$b" --coordinator-share "$s" 2>"$OUT/$name.err" &
    fi
    pid=$!
    for _ in $(seq 600); do
        [ -s "$pf" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.5
    done
    if [ ! -s "$pf" ]; then
        log "$name: no server: $(tail -3 "$OUT/$name.err")"
        kill $pid 2>/dev/null
        wait $pid 2>/dev/null
        continue
    fi
    log "$name: serving on port $(cat "$pf")"
    timeout 400 python3 "$HERE/serve_load.py" "$(cat "$pf")" --clients "${CLIENTS:-1,4,16,64}" \
        --prompt-len "${PROMPT_LEN:-16}" --out-len "${OUT_LEN:-32}" --requests-per-client 1 --vocab "${VOCAB:-150000}" \
        >"$OUT/$name.jsonl" 2>>"$OUT/log.txt"
    log "$name: load done (rc $?): $(wc -l <"$OUT/$name.jsonl") rounds"
    kill -TERM $pid 2>/dev/null
    for _ in $(seq 60); do kill -0 $pid 2>/dev/null || break; sleep 0.5; done
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    log "$name: stopped"
done
