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
#   --local           one-box test: --oversubscribe, and --allow-run-as-root when run as root
#   --cores-per-rank N   cores bound to each rank (default 1), also passed as -t
#   --worker-model DIR   workers read this path instead (per-node copies at another path)
#   --placement P, --replicas R, --wire-dtype D   passed to trustmoe
#   --binary PATH     trustmoe binary (default: build/trustmoe next to this script's repo)
#   --show            print the placement (trustmoe inspect --workers N) and the mpirun line first
#   --dry-run         print the mpirun line and stop
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
model="" workers="" hostfile="" local=0 cores=1 worker_model="" show=0 dry=0
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
# -q keeps an error to trustmoe's one line (no exit-status banner from mpirun)
opts=(-q --map-by "slot:PE=$cores" --bind-to core -x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1)
[ "$local" = 1 ] && opts=(-q --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1)
[ "$local" = 1 ] && [ "$(id -u)" = 0 ] && opts+=(--allow-run-as-root)
[ -n "$hostfile" ] && opts+=(--hostfile "$hostfile")
args=("$cmd" -m "$model" -t "$cores" "${extra[@]}" "$@")
if [ -n "$worker_model" ] && [ "$workers" -gt 0 ]; then
    # MPMD: rank 0 reads -m MODEL, the workers their own copy; the handshake
    # still checks that both are the same checkpoint.
    wargs=("$cmd" -m "$worker_model" -t "$cores" "${extra[@]}" "$@")
    line=(mpirun "${opts[@]}" -np 1 "$bin" "${args[@]}" : -np "$workers" "$bin" "${wargs[@]}")
else
    line=(mpirun "${opts[@]}" -np "$np" "$bin" "${args[@]}")
fi

if [ "$show" = 1 ] && [ "$workers" -gt 0 ]; then
    placement_args=()
    for ((i = 0; i < ${#extra[@]}; i += 2)); do
        [ "${extra[i]}" = --wire-dtype ] || placement_args+=("${extra[i]}" "${extra[i + 1]}")
    done
    "$bin" inspect -m "$model" --workers "$workers" "${placement_args[@]}" | sed -n '/^placement:/,$p' >&2
fi
if [ "$show" = 1 ] || [ "$dry" = 1 ]; then
    printf '%q ' "${line[@]}" >&2
    echo >&2
fi
[ "$dry" = 1 ] && exit 0
exec "${line[@]}"
