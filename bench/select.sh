#!/usr/bin/env bash
# bench/select.sh: selection cost against decode time (issue 5 item 5:
# "selection costs under 2% of decode time at 128 experts, top-8").
#
#   bench/select.sh [RUNS]        (default 5 generate runs per setting)
#
# 1. build/bench/bench_select: ns per trust_select call at E=128, k=8,
#    48 layers, for the engine's own top-k and the router, blend and
#    trust-first modes (median of 21 repeats of 2000 tokens x 48 layers).
# 2. The omni48-small model (48 layers, 128 experts, top-8; made once with
#    `trustmoe mkmodel --preset omni48-small -o build/omni48-small`, 2.8 GB):
#    `generate --ids 1,2,3 -n 32 --temp 0 --json`, without trust flags and
#    with `--select blend --alpha 0.9`, alternating, RUNS times each;
#    medians of timings.decode_ms_per_token and split_ms.routing_selection.
# 3. Prints selection us per token (48 x ns per call) as a percentage of the
#    decode ms per token, and the measured generate difference.
# Set MODEL_DIR to use another copy of the model; THREADS for -t.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-5}
MODEL_DIR=${MODEL_DIR:-build/omni48-small}
OUT=${OUT:-build/select-bench}
THREADS=${THREADS:-}
mkdir -p "$OUT"

make build/trustmoe build/bench/bench_select >/dev/null
cp build/trustmoe "$OUT/trustmoe"
BIN="$OUT/trustmoe"
if [ ! -f "$MODEL_DIR/config.json" ]; then
    "$BIN" mkmodel --preset omni48-small -o "$MODEL_DIR"
fi
TOPT=()
[ -n "$THREADS" ] && TOPT=(-t "$THREADS")

echo "== bench_select"
build/bench/bench_select 21 2000 | tee "$OUT/bench_select.txt"

echo "== generate on $MODEL_DIR, $RUNS runs per setting, alternating"
: >"$OUT/generate.tsv"
"$BIN" generate -m "$MODEL_DIR" "${TOPT[@]}" --ids 1,2,3 -n 4 --temp 0 --json >/dev/null 2>&1 # page cache
for r in $(seq 1 "$RUNS"); do
    for setting in plain blend; do
        args=()
        [ "$setting" = blend ] && args=(--select blend --alpha 0.9)
        "$BIN" generate -m "$MODEL_DIR" "${TOPT[@]}" --ids 1,2,3 -n 32 --temp 0 --json "${args[@]}" \
            2>"$OUT/generate-$setting.err" >"$OUT/generate-$setting.json"
        python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); t = d["timings"]
print(sys.argv[2], t["decode_ms_per_token"], t["split_ms"]["routing_selection"], t["decode_tokens"], sep="\t")
' "$OUT/generate-$setting.json" "$setting" | tee -a "$OUT/generate.tsv"
    done
done

python3 - "$OUT/bench_select.txt" "$OUT/generate.tsv" <<'EOF'
import statistics, sys
sel = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or line.startswith("mode"):
        continue
    f = line.split()
    sel[f[0]] = (float(f[1]), float(f[3]))
runs = {"plain": [], "blend": []}
route = {"plain": [], "blend": []}
for line in open(sys.argv[2]):
    s, ms, rt, n = line.split("\t")
    runs[s].append(float(ms))
    route[s].append(float(rt))
dec = {s: statistics.median(v) for s, v in runs.items()}
print("\ndecode ms/token, median of %d: without trust %.3f (runs %s), --select blend --alpha 0.9 %.3f (runs %s)"
      % (len(runs["plain"]), dec["plain"], " ".join("%.2f" % x for x in runs["plain"]),
         dec["blend"], " ".join("%.2f" % x for x in runs["blend"])))
print("routing+selection ms per run (router matmul, softmax, top-k; prefill and decode), median: "
      "without %.2f, blend %.2f" % (statistics.median(route["plain"]), statistics.median(route["blend"])))
print("generate difference blend - plain: %+.3f ms/token (%+.2f%%)"
      % (dec["blend"] - dec["plain"], 100 * (dec["blend"] / dec["plain"] - 1)))
print("\n| mode | ns per call (median) | us per token (48 layers) | %% of decode ms/token (%.2f ms, no trust) |" % dec["plain"])
print("|---|---|---|---|")
for m, (ns, us) in sel.items():
    print("| %s | %.0f | %.1f | %.3f%% |" % (m, ns, us, 100 * us / 1e3 / dec["plain"]))
EOF
