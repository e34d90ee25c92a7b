#!/bin/bash
# trustmoe-run.sh: build and run the mpirun line for a model and a worker count.
#
#   deploy/trustmoe-run.sh -m MODEL -w WORKERS [options] -- COMMAND [trustmoe options]
#   deploy/trustmoe-run.sh -m ~/Qwen3-30B-A3B -w 8 --hostfile hosts -- generate --ids 1,2,3 -n 32 --temp 0
#   deploy/trustmoe-run.sh -m tests/fixtures/qwen3moe-bf16 -w 2 --local -- logits --ids 1,2,3 -o /tmp/l.f32
#
# Options:
#   -m DIR            model folder (same path on every node, or see --worker-model)
#   -w N              worker ranks (0: everything in one process)
#   --hostfile FILE   Open MPI hostfile (deploy/hostfile.example)
#   --local           one host: the workers take --cores-per-rank cores each, rank 0 the rest of
#                     the host's cores (nproc) and the experts but for half the workers' share of
#                     the threads; no binding, --oversubscribe, and --allow-run-as-root when run as root
#   --cores-per-rank N   cores bound to each rank (default 1), also passed as -t; with --local,
#                     to each worker
#   --coordinator-share F   experts rank 0 hosts itself (default: its fraction of the job's threads,
#                     more with --local; 0 leaves every expert to the workers)
#   --worker-model DIR   workers read this path instead (per-node copies at another path)
#   --placement P, --replicas R, --wire-dtype D   passed to trustmoe
#   --binary PATH     trustmoe binary (default: build/trustmoe next to this script's repo)
#   --show            print the placement (trustmoe inspect --workers N) and the mpirun line first
#   --dry-run         print the mpirun line and stop
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
model="" workers="" hostfile="" local=0 cores=1 worker_model="" show=0 dry=0 share=""
bin=${TRUSTMOE:-$here/build/trustmoe}
extra=()
# the header comment above, up to its first non-comment line
usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case $1 in
    -m) model=$2; shift 2 ;;
    -w) workers=$2; shift 2 ;;
    --hostfile) hostfile=$2; shift 2 ;;
    --local) local=1; shift ;;
    --cores-per-rank) cores=$2; shift 2 ;;
    --coordinator-share) share=$2; shift 2 ;;
    --worker-model) worker_model=$2; shift 2 ;;
    --placement | --replicas | --wire-dtype) extra+=("$1" "$2"); shift 2 ;;
    --binary) bin=$2; shift 2 ;;
    --show) show=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; break ;;
    *) echo "trustmoe-run: unknown option '$1'" >&2; usage ;;
    esac
done
[ -n "$model" ] && [ -n "$workers" ] && [ $# -ge 1 ] || usage
case $workers in '' | *[!0-9]*) echo "trustmoe-run: -w needs a number" >&2; exit 2 ;; esac
[ -f "$model/config.json" ] || { echo "trustmoe-run: $model/config.json not found" >&2; exit 2; }
[ -x "$bin" ] || { echo "trustmoe-run: $bin is not built (make)" >&2; exit 2; }
cmd=$1
shift

np=$((workers + 1))
# Threads: every rank -t $cores, bound to as many cores; with --local, rank 0
# takes what the workers leave of the host.  Attention and the head run on
# rank 0 alone, so on one host it needs most cores, and with them the
# matching share of the experts, computed while the workers compute theirs
# (bench/RESULTS.md, "Expert parallelism that pays").
t0=$cores
if [ "$local" = 1 ] && [ "$workers" -gt 0 ]; then
    host_cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) # nproc obeys OMP_NUM_THREADS
    t0=$((host_cores - workers * cores))
    [ "$t0" -ge 1 ] || t0=1
fi
# Experts: rank 0 hosts the fraction of them that its threads are of the
# job's.  On one host (--local) the workers host half their fraction: at
# batch 1 a worker that holds one of a token's experts reads it on its own
# few cores while rank 0 reads the rest on most of the host, so it gets fewer
# (with 2 one-core workers of 16 cores rank 0 hosts 93.75%, not 87.5%;
# deploy/GUIDE.md has the measurements and the trade-off at large batches).
if [ -z "$share" ]; then
    share=0
    half=1
    [ "$local" = 1 ] && half=2
    [ "$workers" -gt 0 ] &&
        share=$(awk -v a="$t0" -v b=$((workers * cores)) -v h="$half" 'BEGIN { printf "%.4g", 1 - b / (a + b) / h }')
fi
# -q keeps an error to trustmoe's one line (no exit-status banner from mpirun)
opts=(-q --map-by "slot:PE=$cores" --bind-to core)
[ "$local" = 1 ] && opts=(-q --oversubscribe --bind-to none)
[ "$local" = 1 ] && [ "$(id -u)" = 0 ] && opts+=(--allow-run-as-root)
[ -n "$hostfile" ] && opts+=(--hostfile "$hostfile")
# -x before the first app context of an MPMD line reaches only that context,
# so every context carries its own
env=(-x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1)
dist=()
[ "$workers" -gt 0 ] && dist=(--coordinator-share "$share")
args=("$cmd" -m "$model" -t "$t0" "${dist[@]}" "${extra[@]}" "$@")
wargs=("$cmd" -m "${worker_model:-$model}" -t "$cores" "${dist[@]}" "${extra[@]}" "$@")
if [ "$workers" -gt 0 ] && { [ -n "$worker_model" ] || [ "$t0" != "$cores" ]; }; then
    # MPMD: rank 0 and the workers differ in threads or in model path; the
    # handshake still checks that all load the same checkpoint.
    line=(mpirun "${opts[@]}" -np 1 "${env[@]}" "$bin" "${args[@]}" : -np "$workers" "${env[@]}" "$bin" "${wargs[@]}")
else
    line=(mpirun "${opts[@]}" "${env[@]}" -np "$np" "$bin" "${args[@]}")
fi

if [ "$show" = 1 ] && [ "$workers" -gt 0 ]; then
    placement_args=()
    for ((i = 0; i < ${#extra[@]}; i += 2)); do
        [ "${extra[i]}" = --wire-dtype ] || placement_args+=("${extra[i]}" "${extra[i + 1]}")
    done
    "$bin" inspect -m "$model" --workers "$workers" "${placement_args[@]}" | sed -n '/^placement:/,$p' >&2
    echo "trustmoe-run: rank 0 -t $t0, hosting a share $share of every layer's experts; workers -t $cores" >&2
fi
if [ "$show" = 1 ] || [ "$dry" = 1 ]; then
    printf '%q ' "${line[@]}" >&2
    echo >&2
fi
[ "$dry" = 1 ] && exit 0
exec "${line[@]}"
