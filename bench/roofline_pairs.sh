#!/bin/bash
# Roofline of decode at batch 1 on omni48-small, single process, 1 thread:
# N rounds of (read-bandwidth probe, then one decode run per variant) back to
# back, so that each ratio compares figures taken under the same machine
# load; prints each run and the median ratio per variant.
#   bench/roofline_pairs.sh [N] [VARIANT...]
# A variant is LABEL=ARGS, the model arguments of `trustmoe generate`
# (default: synthetic=--synthetic omni48-small); the binary is $TRUSTMOE,
# or the one named in LABEL@BINARY=ARGS.  Example, the checkpoint copied into
# huge pages against the same checkpoint mapped:
#   bench/roofline_pairs.sh 7 "copy=-m build/omni48-small" "map=-m build/omni48-small --map-weights"
set -u
N=${1:-5}
shift || true
[ $# -gt 0 ] || set -- "synthetic=--synthetic omni48-small"
T=${TRUSTMOE:-build/trustmoe}
BK=${BENCH_KERNELS:-build/bench/bench_kernels}
BYTES=377.7e6 # bench/engine.sh: attention, router, 8 experts x 48 layers, lm_head, KV at context 40
ids=101,102,103,104,105,106,107,108
for i in $(seq "$N"); do
    bw=$("$BK" -t 1 -r 5 -s bw | sed -n 's/^read bandwidth (1 threads*): \([0-9.]*\) GB\/s.*/\1/p')
    for v in "$@"; do
        label=${v%%=*} args=${v#*=} bin=$T
        case $label in *@*) bin=${label#*@} label=${label%%@*} ;; esac
        # shellcheck disable=SC2086
        ms=$("$bin" generate $args --ids $ids -n 48 --temp 0 --json -t 1 2>/dev/null |
            python3 -c "import json,sys; print(json.load(sys.stdin)['timings']['decode_ms_per_token'])")
        python3 -c "b=$BYTES; bw=$bw; ms=$ms; print(f'round $i $label: bandwidth {bw:.1f} GB/s, decode {ms:.2f} ms/token, achieved {b/ms/1e6:.1f} GB/s, ratio {b/(bw*1e9)*1e3/ms:.3f}')"
    done
done | tee /dev/stderr | python3 -c "
import collections, statistics, sys
r = collections.defaultdict(list)
for l in sys.stdin:
    if 'ratio' in l:
        r[l.split(':')[0].split(' ', 2)[2]].append((float(l.rsplit(' ', 1)[1]), float(l.split('decode ')[1].split(' ')[0])))
for k, v in r.items():
    print(f'{k}: median ratio {statistics.median(x for x, _ in v):.3f}, median decode {statistics.median(y for _, y in v):.2f} ms/token over {len(v)} rounds')"
