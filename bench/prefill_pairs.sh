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
#   VARIANTS        more than the two: "LABEL@BINARY@VAR=VALUE ..." (the third
#                   field optional), e.g. "old@$OLD new@$NEW nat@$NEW@TRUSTMOE_EXPERT_LAYOUT=natural";
#                   ratios are against the one labelled old, floors from the one labelled new
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
variants = sorted({v for _, v in runs}, key=lambda v: (v != 'old', v != 'new', v))
fl_rate = max(rate.values())  # the fastest product measured: the most demanding floor
def floor_ms(gb, gflop):
    return max(gb * 1e9 / bw, gflop / fl_rate) * 1e3
for case in sorted({c for c, _ in runs}, key=lambda c: (c[0], int(c.lstrip('prefilbatch')))):
    pre = case.startswith('prefill')
    tps, xk, gk, fk = ('prefill_tps', 'p_xms', 'p_gb', 'p_gflop') if pre else ('decode_tps', 'd_xms', 'd_gb', 'd_gflop')
    base = med(case, 'old', tps) if runs[(case, 'old')] else None
    ref = next((v for v in ('new',) + tuple(variants) if runs[(case, v)] and any(gk in r for r in runs[(case, v)])), None)
    fl = floor_ms(med(case, ref, gk), med(case, ref, fk)) if ref else None
    parts = []
    for v in variants:
        if not runs[(case, v)]: continue
        t = med(case, v, tps)
        p = f"{v} {t:.1f} tok/s"
        if base and v != 'old': p += f" ({t / base:.2f}x old)"
        x = med(case, v, xk) if any(xk in r for r in runs[(case, v)]) else (med(case, v, 'experts_ms') if pre else None)
        if x and fl: p += f", experts {x:.0f} ms = {fl / x:.2f} of floor"
        if pre:
            p += f", attention {med(case, v, 'attention_ms'):.0f} ms"
            if any('att_core_ms' in r for r in runs[(case, v)]): p += f" (core {med(case, v, 'att_core_ms'):.0f})"
        pk = 'p' if pre else 'd'
        if any(f'{pk}_pack_ms' in r for r in runs[(case, v)]):
            p += " [passes " + '/'.join(f"{med(case, v, f'{pk}_{n}_ms'):.0f}" for n in ('pack', 'gateup', 'down', 'combine')) + " ms]"
        parts.append(p)
    n = max(len(runs[(case, v)]) for v in variants)
    print(f"{case}: floor {fl:.0f} ms; " + '; '.join(parts) + f"; {n} rounds" if fl else f"{case}: " + '; '.join(parts))
PY
}
if [ "${1:-}" = --summary ]; then
    summary "$2"
    exit
fi
N=${1:-3}
OLD=${OLD:-build/trustmoe} NEW=${NEW:-build/trustmoe}
VARIANTS=${VARIANTS:-old@$OLD new@$NEW}
BK=${BENCH_KERNELS:-build/bench/bench_kernels}
MODEL=${MODEL:---synthetic omni30b-12}
TH=${THREADS:-16} LENS=${LENS:-64 128 512} BATCHES=${BATCHES:-4 16 64} NT=${NEW_TOKENS:-9}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# probes: read rate (best of the probe's variants) and the direct-product rate per token count
bw=$("$BK" -t "$TH" -r 5 -m 1024 -s bw | sed -n 's/^read bandwidth ([0-9]* threads*): \([0-9.]*\) GB\/s.*/\1/p')
"$BK" -t "$TH" -r 3 -s gemm >"$tmp/gemm" 2>/dev/null
direct() { # the faster of the direct and even/odd products, GFLOP/s, omni30b's gate shape at n tokens
    awk -v n="n=$1" '$1 == "omni30b" && $2 == n { print ($6 > $5 ? $6 : $5) }' "$tmp/gemm"
}

ids() { python3 -c "import sys; print(','.join(str(1 + (i * 7919) % 499) for i in range(int(sys.argv[1]))))" "$1"; }
for B in $BATCHES; do
    python3 -c "
import sys
B = int(sys.argv[1])
for q in range(B): print(','.join(str(1 + (q * 131 + i * 7919) % 499) for i in range(8)))" "$B" >"$tmp/prompts$B"
done

# one run: prints "KEY value" pairs from the JSON timings and the expert statistics
run() { # VARIANT ARGS...
    local bin envv
    IFS=@ read -r _ bin envv <<<"$1"
    shift
    # shellcheck disable=SC2086
    env TRUSTMOE_EXPERT_STATS=1 $envv "$bin" generate $MODEL --no-check-finite --temp 0 --json -t "$TH" "$@" \
        >"$tmp/out" 2>"$tmp/err" || { echo "FAILED"; tail -3 "$tmp/err" >&2; return; }
    python3 - "$tmp/out" "$tmp/err" <<'PY'
import json, re, sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith('{')][-1])['timings']
s = j['split_ms']
out = [f"prefill_ms {j['prefill_ms']:.1f}", f"prefill_tps {j['prefill_tokens_per_second']:.2f}",
       f"decode_tps {j['tokens_per_second']:.2f}", f"attention_ms {s['attention']:.1f}", f"experts_ms {s['experts']:.1f}",
       f"load_ms {j['load_ms']:.0f}"]
if 'attention_core' in s: out.append(f"att_core_ms {s['attention_core']:.1f}")
for l in open(sys.argv[2]):
    m = re.search(r'local experts, (first|later) call.*?(\d+) pairs, ([0-9.]+) GB of expert weights, ([0-9.]+) GFLOP, ([0-9.]+) ms', l)
    if m:
        k = 'p' if m.group(1) == 'first' else 'd'
        out += [f"{k}_gb {m.group(3)}", f"{k}_gflop {m.group(4)}", f"{k}_xms {m.group(5)}"]
    m = re.search(r'(first|later) call.*grouped passes: pack ([0-9.]+), gate and up ([0-9.]+), down ([0-9.]+), combine ([0-9.]+) ms', l)
    if m:
        k = 'p' if m.group(1) == 'first' else 'd'
        out += [f"{k}_{n}_ms {m.group(i + 2)}" for i, n in enumerate(('pack', 'gateup', 'down', 'combine'))]
print(' '.join(out))
PY
}

probe="probe: read ${bw} GB/s at $TH threads; direct product GFLOP/s n=4 $(direct 4), n=8 $(direct 8), n=32 $(direct 32)"
echo "$probe" >"$tmp/log"
echo "$probe"
for r in $(seq "$N"); do
    for L in $LENS; do
        for v in $VARIANTS; do
            echo "round $r prefill$L ${v%%@*}: $(run "$v" --ids "$(ids "$L")" -n 1)"
        done
    done
    for B in $BATCHES; do
        for v in $VARIANTS; do
            echo "round $r batch$B ${v%%@*}: $(run "$v" --prompts "$tmp/prompts$B" -n "$NT")"
        done
    done
done | tee -a "$tmp/log"

summary "$tmp/log"
