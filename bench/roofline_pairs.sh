#!/bin/bash
# Roofline of decode at batch 1 on omni48-small, single process, 1 thread:
# N pairs of (read-bandwidth probe, decode run) back to back, so that each
# ratio compares figures taken under the same machine load; prints each pair
# and the median ratio.   bench/roofline_pairs.sh [N]
set -u
N=${1:-5}
T=${TRUSTMOE:-build/trustmoe}
BK=${BENCH_KERNELS:-build/bench/bench_kernels}
BYTES=377.7e6 # bench/engine.sh: attention, router, 8 experts x 48 layers, lm_head, KV at context 40
ids=101,102,103,104,105,106,107,108
for i in $(seq "$N"); do
    bw=$("$BK" -t 1 -r 5 -s bw | sed -n 's/^read bandwidth (1 threads*): \([0-9.]*\) GB\/s.*/\1/p')
    ms=$("$T" generate --synthetic omni48-small --ids $ids -n 48 --temp 0 --json -t 1 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['timings']['decode_ms_per_token'])")
    python3 -c "b=$BYTES; bw=$bw; ms=$ms; print(f'pair $i: bandwidth {bw:.1f} GB/s, decode {ms:.2f} ms/token, achieved {b/ms/1e6:.1f} GB/s, ratio {b/(bw*1e9)*1e3/ms:.3f}')"
done | tee /dev/stderr | python3 -c "
import statistics, sys
r = [float(l.rsplit(' ', 1)[1]) for l in sys.stdin if 'ratio' in l]
print(f'median ratio over {len(r)} pairs: {statistics.median(r):.3f}')"
