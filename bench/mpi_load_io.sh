#!/bin/bash
# Bytes each worker reads from disk at load (bench/RESULTS.md, "Reading only
# the hosted experts").
#   bench/mpi_load_io.sh MODEL [NP]
# Evicts MODEL's safetensors files from the page cache (posix_fadvise
# DONTNEED on those files only), starts `mpirun -np NP trustmoe logits`
# (default NP 3), stops rank 0 once every worker has loaded, and prints each
# worker's read_bytes from /proc/PID/io beside the expert bytes it hosts.
set -u
cd "$(dirname "$0")/.." || exit 2
M=$1
NP=${2:-3}
T=${TRUSTMOE:-build/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
TMP=$(mktemp -d /tmp/trustmoe-io.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
python3 - "$M" <<'PY'
import glob, os, sys
for p in glob.glob(os.path.join(sys.argv[1], "*.safetensors")):
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
mpirun --oversubscribe -np "$NP" "$T" logits -m "$M" --ids 1,2,3 -o "$TMP/l.f32" --idle-timeout 600 \
    >/dev/null 2>"$TMP/err" &
mp=$!
for _ in $(seq 3000); do
    grep -q "workers ready" "$TMP/err" 2>/dev/null && break
    sleep 0.1
done
workers=$(sed -n 's/^trustmoe: rank [0-9]* ([^,]*, pid \([0-9]*\)).*/\1/p' "$TMP/err" | sort -u)
rank0=""
for p in $(ps -o pid= --ppid "$mp"); do
    case " $(echo $workers) " in *" $p "*) ;; *) rank0=$p ;; esac
done
[ -n "$rank0" ] && kill -STOP "$rank0"
for p in $workers; do
    rb=$(awk '/^read_bytes/ {print $2}' "/proc/$p/io" 2>/dev/null)
    eb=$(sed -n "s/^trustmoe: rank [0-9]* ([^,]*, pid $p): [0-9]* experts, \([0-9.]*\) MiB of expert weights.*/\1/p" "$TMP/err")
    echo "worker pid $p: read $(python3 -c "print(f'{${rb:-0} / 2**20:.1f}')") MiB from disk for $eb MiB of experts" \
        "($(python3 -c "print(f'{${rb:-0} / 2**20 / max(float(\"${eb:-0}\"), 1e-9):.2f}')")x)"
done
[ -n "$rank0" ] && kill -CONT "$rank0"
wait "$mp"
echo "run exit status $?"
