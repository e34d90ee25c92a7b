#!/bin/bash
# Prefill and batched decode at -np 1, old binary against new in paired
# rounds: each round runs every case with each binary back to back, so both
# see the same machine load.  Prints every run, then per case and binary the
# median over rounds, the new/old ratio of medians and the expert phase
# against its floor.
#   bench/prefill_pairs.sh ROUNDS            runs, logging to stdout
#   bench/prefill_pairs.sh --summary LOG     the summary of such a log again
# Environment (defaults in brackets):
#   OLD, NEW        the two trustmoe binaries [build/trustmoe for both]
#   BENCH_KERNELS   for the read-rate and direct-product probes [build/bench/bench_kernels]
#   MODEL           model arguments [--synthetic omni30b-12]
#   THREADS [16]  LENS: prompt lengths [64 128 512]  BATCHES: sequences [4 16 64]
#   NEW_TOKENS      tokens generated per sequence in the decode cases [9: 8 decode steps]
# The floor of an expert phase is max(expert bytes / read rate, flops / direct
# rate), bytes and flops from the routing the new binary actually took
# (TRUSTMOE_EXPERT_STATS=1); the direct rate is bench_kernels' BF16 product at
# the expert shape with about as many tokens per expert as the case gives.
set -u
summary() { # LOG: per case and binary, medians over rounds; the probe line gives the floor's rates
    local probe
    probe=$(grep -m1 '^probe:' "$1")
    BW=$(sed 's/.*read \([0-9.]*\) GB.*/\1/' <<<"$probe") D4=$(sed 's/.*n=4 \([0-9.]*\).*/\1/' <<<"$probe") \
        D8=$(sed 's/.*n=8 \([0-9.]*\).*/\1/' <<<"$probe") D32=$(sed 's/.*n=32 \([0-9.]*\).*/\1/' <<<"$probe") \
        python3 - "$1" <<'PY'
import collections, os, statistics, sys
runs = collections.defaultdict(list)
for l in open(sys.argv[1]):
    if not l.startswith('round') or 'FAILED' in l: continue
    head, body = l.split(': ', 1)
    _, _, case, v = head.split()
    kv = body.split()
    runs[(case, v)].append({kv[i]: float(kv[i + 1]) for i in range(0, len(kv), 2)})
bw = float(os.environ['BW']) * 1e9
rate = {4: float(os.environ['D4']), 8: float(os.environ['D8']), 32: float(os.environ['D32'])}
med = lambda case, v, k: statistics.median(r[k] for r in runs[(case, v)] if k in r)
def floor_ms(gb, gflop, n):
    g = rate[min(rate, key=lambda x: abs(x - n))]
    return max(gb * 1e9 / bw, gflop / g) * 1e3
for case in sorted({c for c, _ in runs}, key=lambda c: (c[0], int(c.lstrip('prefilbatch')))):
    if not runs[(case, 'old')] or not runs[(case, 'new')]: continue
    n = len(runs[(case, 'new')])
    if case.startswith('prefill'):
        T = int(case[7:])
        o, w = med(case, 'old', 'prefill_tps'), med(case, 'new', 'prefill_tps')
        fl = floor_ms(med(case, 'new', 'p_gb'), med(case, 'new', 'p_gflop'), T * 8 / 128)
        xo, xn = med(case, 'old', 'experts_ms'), med(case, 'new', 'experts_ms')
        print(f"{case}: prefill tok/s old {o:.1f} new {w:.1f} ({w / o:.2f}x); experts old {xo:.0f} ms new {xn:.0f} ms, "
              f"floor {fl:.0f} ms: new at {fl / xn:.2f} of floor (old {fl / xo:.2f}); attention old "
              f"{med(case, 'old', 'attention_ms'):.0f} ms new {med(case, 'new', 'attention_ms'):.0f} ms; {n} rounds")
    else:
        B = int(case[5:])
        o, w = med(case, 'old', 'decode_tps'), med(case, 'new', 'decode_tps')
        fl = floor_ms(med(case, 'new', 'd_gb'), med(case, 'new', 'd_gflop'), B * 8 / 128)
        xn = med(case, 'new', 'd_xms')
        print(f"{case}: decode tok/s old {o:.1f} new {w:.1f} ({w / o:.2f}x); decode experts new {xn:.0f} ms, floor "
              f"{fl:.0f} ms: {fl / xn:.2f} of floor; {n} rounds")
PY
}
if [ "${1:-}" = --summary ]; then
    summary "$2"
    exit
fi
N=${1:-3}
OLD=${OLD:-build/trustmoe} NEW=${NEW:-build/trustmoe}
BK=${BENCH_KERNELS:-build/bench/bench_kernels}
MODEL=${MODEL:---synthetic omni30b-12}
TH=${THREADS:-16} LENS=${LENS:-64 128 512} BATCHES=${BATCHES:-4 16 64} NT=${NEW_TOKENS:-9}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# probes: read rate (best of the probe's variants) and the direct-product rate per token count
bw=$("$BK" -t "$TH" -r 5 -m 1024 -s bw | sed -n 's/^read bandwidth ([0-9]* threads*): \([0-9.]*\) GB\/s.*/\1/p')
"$BK" -t "$TH" -r 3 -s gemm >"$tmp/gemm" 2>/dev/null
direct() { # direct GFLOP/s of the largest shape's row at n tokens
    awk -v n="n=$1" '$1 == "omni30b" && $2 == n { print $(NF - 1) }' "$tmp/gemm"
}

ids() { python3 -c "import sys; print(','.join(str(1 + (i * 7919) % 499) for i in range(int(sys.argv[1]))))" "$1"; }
for B in $BATCHES; do
    python3 -c "
import sys
B = int(sys.argv[1])
for q in range(B): print(','.join(str(1 + (q * 131 + i * 7919) % 499) for i in range(8)))" "$B" >"$tmp/prompts$B"
done

# one run: prints "KEY value" pairs from the JSON timings and the expert statistics
run() { # BIN ARGS...
    local bin=$1
    shift
    # shellcheck disable=SC2086
    TRUSTMOE_EXPERT_STATS=1 "$bin" generate $MODEL --no-check-finite --temp 0 --json -t "$TH" "$@" \
        >"$tmp/out" 2>"$tmp/err" || { echo "FAILED"; tail -3 "$tmp/err" >&2; return; }
    python3 - "$tmp/out" "$tmp/err" <<'PY'
import json, re, sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith('{')][-1])['timings']
s = j['split_ms']
out = [f"prefill_ms {j['prefill_ms']:.1f}", f"prefill_tps {j['prefill_tokens_per_second']:.2f}",
       f"decode_tps {j['tokens_per_second']:.2f}", f"attention_ms {s['attention']:.1f}", f"experts_ms {s['experts']:.1f}",
       f"load_ms {j['load_ms']:.0f}"]
for l in open(sys.argv[2]):
    m = re.search(r'local experts, (first|later) call.*?(\d+) pairs, ([0-9.]+) GB of expert weights, ([0-9.]+) GFLOP, ([0-9.]+) ms', l)
    if m:
        k = 'p' if m.group(1) == 'first' else 'd'
        out += [f"{k}_gb {m.group(3)}", f"{k}_gflop {m.group(4)}", f"{k}_xms {m.group(5)}"]
print(' '.join(out))
PY
}

probe="probe: read ${bw} GB/s at $TH threads; direct product GFLOP/s n=4 $(direct 4), n=8 $(direct 8), n=32 $(direct 32)"
echo "$probe" >"$tmp/log"
echo "$probe"
for r in $(seq "$N"); do
    for L in $LENS; do
        for v in old new; do
            bin=$OLD; [ $v = new ] && bin=$NEW
            echo "round $r prefill$L $v: $(run "$bin" --ids "$(ids "$L")" -n 1)"
        done
    done
    for B in $BATCHES; do
        for v in old new; do
            bin=$OLD; [ $v = new ] && bin=$NEW
            echo "round $r batch$B $v: $(run "$bin" --prompts "$tmp/prompts$B" -n "$NT")"
        done
    done
done | tee -a "$tmp/log"

summary "$tmp/log"
