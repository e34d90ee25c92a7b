#!/bin/bash
# CPU use of idle workers (bench/RESULTS.md, "Idle workers").
#   bench/mpi_idle_cpu.sh [MODEL] [SECONDS]
# Starts `mpirun -np 3 trustmoe generate` on MODEL (default the qwen3moe-bf16
# fixture), stops rank 0 with SIGSTOP in the middle of the generation, so
# that the workers have just served requests and then get nothing, and reads
# each worker's utime + stime from /proc/PID/stat over SECONDS (default 10).
# Prints one line per worker: CPU percent of one core while idle.  Rank 0 is
# then continued and the run finishes normally.
set -u
cd "$(dirname "$0")/.." || exit 2
M=${1:-tests/fixtures/qwen3moe-bf16}
SECS=${2:-10}
T=${TRUSTMOE:-build/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
TMP=$(mktemp -d /tmp/trustmoe-idle.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
for i in $(seq 64); do echo "$((i * 3 + 1)),$((i * 5 + 2)),$((i * 7 + 3)),$((i + 4))"; done >"$TMP/prompts"
mpirun --oversubscribe -np 3 "$T" generate -m "$M" --prompts "$TMP/prompts" -n 250 --temp 0 \
    >/dev/null 2>"$TMP/err" &
mp=$!
for _ in $(seq 300); do
    grep -q "workers ready" "$TMP/err" 2>/dev/null && break
    sleep 0.05
done
sleep 0.02
workers=$(sed -n 's/^trustmoe: rank [0-9]* ([^,]*, pid \([0-9]*\)).*/\1/p' "$TMP/err" | sort -u)
rank0=""
for p in $(ps -o pid= --ppid "$mp"); do
    case " $(echo $workers) " in *" $p "*) ;; *) rank0=$p ;; esac
done
[ -n "$rank0" ] && [ -n "$workers" ] || { echo "mpi_idle_cpu: cannot find the ranks" >&2; kill "$mp"; exit 1; }
kill -STOP "$rank0"
for p in $workers; do
    [ -e "/proc/$p/stat" ] || { echo "mpi_idle_cpu: the run ended before rank 0 was stopped" >&2; kill -CONT "$rank0"; exit 1; }
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A t0
for p in $workers; do t0[$p]=$(ticks "$p"); done
sleep "$SECS"
hz=$(getconf CLK_TCK)
for p in $workers; do
    t1=$(ticks "$p")
    echo "worker pid $p: $(python3 -c "print(f'{100 * ($t1 - ${t0[$p]}) / $hz / $SECS:.2f}')") % of one core over $SECS s idle"
done
kill -CONT "$rank0"
wait "$mp"
echo "run exit status $?"
