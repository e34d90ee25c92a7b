#!/usr/bin/env bash
# bench/trust_eval.sh: issue 5's measurement of trust-based expert selection
# on the trained demo model (models/brown-moe), end to end.
#
#   bench/trust_eval.sh [OUTDIR]          (default build/trust-eval)
#
# 1. Splits models/brown-moe/heldout.txt by whole documents (blank-line
#    separated, 25 documents): documents 1-12 -> OUTDIR/trust-train.txt,
#    documents 13-25 -> OUTDIR/trust-eval.txt.  Nothing is committed.
# 2. trust fit-contexts (k = CONTEXTS, default 4) and trust train (EPOCHS,
#    default 2; window WINDOW, default 256) on trust-train, into a fresh
#    SQLite database OUTDIR/trust.db.
# 3. trustmoe eval on trust-eval with --stats-json for router, blend at
#    every alpha of ALPHAS, and trust-first (min-evidence 2, epsilon 0 and
#    0.1), all against that database.
# 4. Writes OUTDIR/table.md and OUTDIR/table-layers.md (the RESULTS.md
#    tables), OUTDIR/summary.json and
#    the plot bench/trust_eval.png (PLOT to change the path).
#
# Every window is scored (no --max-windows: MAX_WINDOWS=N sets one).  On a
# 2-vCPU AMD EPYC shared with other builds it took 1.5 to 4.6 minutes
# (train 14-50 s, 5-25 s per eval).
# The plot needs matplotlib (Debian: apt-get install -y python3-matplotlib;
# bench only, not a dependency of trustmoe); without it the table is still
# written and the plot is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/trust-eval}
MODEL=${MODEL:-models/brown-moe}
CONTEXTS=${CONTEXTS:-4}
EPOCHS=${EPOCHS:-2}
WINDOW=${WINDOW:-256}
ALPHAS=${ALPHAS:-"1.0 0.95 0.9 0.8 0.7 0.5 0.3"}
MAX_WINDOWS=${MAX_WINDOWS:-0}
PLOT=${PLOT:-bench/trust_eval.png}
THREADS=${THREADS:-}
# the signal this section of RESULTS.md was measured with
SIGNAL=${SIGNAL:-absolute}

[ -x build/trustmoe ] || make build/trustmoe
mkdir -p "$OUT"
# A private copy of the binary: the tree is shared, and a rebuild half way
# (a different model identity, say) must not split the run across binaries.
cp build/trustmoe "$OUT/trustmoe"
BIN="$OUT/trustmoe"
TOPT=()
[ -n "$THREADS" ] && TOPT=(-t "$THREADS")
MW=()
[ "$MAX_WINDOWS" != 0 ] && MW=(--max-windows "$MAX_WINDOWS")

# 1. the split, by whole documents
awk 'BEGIN { RS = ""; ORS = "\n\n" } NR <= 12' "$MODEL/heldout.txt" >"$OUT/trust-train.txt"
awk 'BEGIN { RS = ""; ORS = "\n\n" } NR > 12' "$MODEL/heldout.txt" >"$OUT/trust-eval.txt"
echo "trust-train: $(awk 'BEGIN{RS=""}END{print NR}' "$OUT/trust-train.txt") documents," \
    "$(wc -c <"$OUT/trust-train.txt") bytes; trust-eval:" \
    "$(awk 'BEGIN{RS=""}END{print NR}' "$OUT/trust-eval.txt") documents, $(wc -c <"$OUT/trust-eval.txt") bytes"

# 2. contexts and reputation, fresh database
DB="$OUT/trust.db"
rm -f "$DB" "$DB-wal" "$DB-shm"
"$BIN" trust fit-contexts -m "$MODEL" "${TOPT[@]}" --corpus "$OUT/trust-train.txt" --trust-db "$DB" \
    --contexts "$CONTEXTS" --window "$WINDOW" | tee "$OUT/fit-contexts.txt"
"$BIN" trust train -m "$MODEL" "${TOPT[@]}" --corpus "$OUT/trust-train.txt" --trust-db "$DB" \
    --signal "$SIGNAL" --epochs "$EPOCHS" --window "$WINDOW" "${MW[@]}" >"$OUT/train.txt"
head -2 "$OUT/train.txt"
"$BIN" trust show --trust-db "$DB" | tee "$OUT/show.txt"
# What the learned trust tracks: its rank correlation with the expert's
# routing credit in its last window, per (context, layer).
"$BIN" trust dump --trust-db "$DB" >"$OUT/dump.txt"
python3 - "$OUT/dump.txt" <<'EOF' | tee "$OUT/trust-vs-credit.txt"
import sys
from collections import defaultdict
g = defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()  # model context layer expert trust evidence last_q last_credit window
    g[(f[1], f[2])].append((float(f[4]), float(f[7]), float(f[6])))
def ranks(v):
    r = [0.0] * len(v)
    for k, i in enumerate(sorted(range(len(v)), key=lambda i: v[i])):
        r[i] = k
    return r
def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a); ma = sum(ra) / n; mb = sum(rb) / n
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else 0.0
rho = [spearman([t for t, c, q in v], [c for t, c, q in v]) for v in g.values()]
qs = [q for v in g.values() for t, c, q in v]
print("trust vs last-window routing credit, Spearman per (context, layer): mean %.3f, range %.3f..%.3f "
      "(%d tables); window quality q ranges %.3f..%.3f against the prior 0.5"
      % (sum(rho) / len(rho), min(rho), max(rho), len(rho), min(qs), max(qs)))
EOF

# 3. held-out evaluation of every setting
run_eval() { # NAME ARGS...
    local name=$1
    shift
    "$BIN" eval -m "$MODEL" "${TOPT[@]}" --corpus "$OUT/trust-eval.txt" --trust-db "$DB" --window "$WINDOW" \
        "${MW[@]}" --stats-json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
    echo "$name: $(head -1 "$OUT/$name.txt")"
}
SETTINGS=(router)
run_eval router --select router
for a in $ALPHAS; do
    run_eval "blend-$a" --select blend --alpha "$a"
    SETTINGS+=("blend-$a")
done
run_eval trust-first-e0 --select trust-first --min-evidence 2 --epsilon 0
run_eval trust-first-e0.1 --select trust-first --min-evidence 2 --epsilon 0.1
SETTINGS+=(trust-first-e0 trust-first-e0.1)

# 4. table, summary and plot
python3 - "$OUT" "${SETTINGS[@]}" <<'EOF'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
rows = []
for n in names:
    d = json.load(open(f"{out}/{n}.json"))
    rows.append(dict(name=n, select=d["select"], alpha=d["alpha"], epsilon=d["epsilon"],
                     min_evidence=d["min_evidence"], ppl=d["perplexity"], tokens=d["tokens"],
                     mean=d["mean"], layers=d["layers"]))
base = rows[0]["ppl"]
for r in rows:
    r["dppl_pct"] = 100.0 * (r["ppl"] / base - 1.0)
json.dump(rows, open(f"{out}/summary.json", "w"), indent=1)

def setting(r):
    if r["select"] == "blend":
        return f"blend α={r['alpha']:g}"
    if r["select"] == "trust-first":
        return f"trust-first ε={r['epsilon']:g}"
    return r["select"]

L = len(rows[0]["layers"])
lines = ["| setting | held-out ppl | Δ vs router | distinct | entropy (bits) | Gini | top-4 share | changed vs router | per-layer entropy (layers 0-%d) |" % (L - 1),
         "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    m = r["mean"]
    per = " ".join(f"{l['entropy_bits']:.2f}" for l in r["layers"])
    lines.append(f"| {setting(r)} | {r['ppl']:.3f} | {r['dppl_pct']:+.2f}% | {m['distinct']:.1f} | "
                 f"{m['entropy_bits']:.3f} | {m['gini']:.3f} | {m['top4_share']:.3f} | "
                 f"{m['changed_frac']:.3f} | {per} |")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# per layer, for router, the blends within 2% of it and trust-first ε=0:
# distinct / entropy / Gini / top-4 share / changed
pick = [r for r in rows if r["select"] == "router" or (r["select"] == "blend" and r["alpha"] < 1 and r["dppl_pct"] < 2)
        or (r["select"] == "trust-first" and r["epsilon"] == 0)]
lay = ["| layer | " + " | ".join(setting(r) for r in pick) + " |", "|---|" + "---|" * len(pick)]
for l in range(L):
    cells = []
    for r in pick:
        x = r["layers"][l]
        cells.append(f"{x['distinct']} / {x['entropy_bits']:.2f} / {x['gini']:.2f} / {x['top4_share']:.2f} / {x['changed_frac']:.2f}")
    lay.append(f"| {l} | " + " | ".join(cells) + " |")
open(f"{out}/table-layers.md", "w").write("\n".join(lay) + "\n")
print("\nper layer: distinct / entropy (bits) / Gini / top-4 share / changed")
print("\n".join(lay))
EOF

PY=python3
"$PY" -c 'import matplotlib' 2>/dev/null || PY=/usr/bin/python3
if "$PY" -c 'import matplotlib' 2>/dev/null; then
    "$PY" bench/trust_eval_plot.py "$OUT/summary.json" "$PLOT"
else
    echo "matplotlib not found: plot skipped (apt-get install -y python3-matplotlib)" >&2
fi
