#!/usr/bin/env python3
"""bench/trust_quality_report.py OUTDIR: the tables of bench/trust_quality.sh.

Reads the trust dumps, importance.txt and the eval --stats-json files of
OUTDIR; writes OUTDIR/spearman.json, signals.json, masks.json and
report.md (the RESULTS.md tables), and prints report.md."""
import glob, json, os, sys
from collections import defaultdict

out = sys.argv[1]


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for m in range(i, j + 1):
            r[order[m]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else 0.0


def summary(v):
    v = sorted(v)
    return dict(mean=sum(v) / len(v), mean_abs=sum(abs(x) for x in v) / len(v), min=v[0], max=v[-1],
                median=v[len(v) // 2], n=len(v))


# ---- trust against credit, usage and counterfactual importance
imp = {}  # (context, layer, expert) -> (uses, dce_per_use)
for line in open(f"{out}/importance.txt"):
    if line.startswith("#"):
        continue
    c, l, e, uses, dce, per = line.split()
    imp[(c, l, e)] = (int(uses), float(per))
sp = {}
lines = []
for sig in ("abs", "adv"):
    g = defaultdict(list)
    for line in open(f"{out}/dump-{sig}.txt"):
        f = line.split()  # model context layer expert trust evidence last_q last_credit window
        g[(f[1], f[2])].append((f[3], float(f[4]), float(f[7])))
    rc, ru, ri = [], [], []
    for (c, l), rows in g.items():
        rc.append(spearman([t for _, t, _ in rows], [cr for _, _, cr in rows]))
        m = [(t, imp[(c, l, e)]) for e, t, _ in rows if (c, l, e) in imp]
        if len(m) >= 5:
            ru.append(spearman([t for t, _ in m], [u for _, (u, _) in m]))
            ri.append(spearman([t for t, _ in m], [p for _, (_, p) in m]))
    sp[sig] = dict(credit=summary(rc), usage=summary(ru), importance=summary(ri))
# importance against usage: is the counterfactual itself a usage proxy?
g = defaultdict(list)
for (c, l, e), (u, p) in imp.items():
    g[(c, l)].append((u, p))
iu = [spearman([u for u, _ in v], [p for _, p in v]) for v in g.values() if len(v) >= 5]
sp["importance_vs_usage"] = summary(iu)
json.dump(sp, open(f"{out}/spearman.json", "w"), indent=1)
name = {"abs": "absolute", "adv": "advantage"}
lines += ["| signal | ρ(trust, last-window credit) | ρ(trust, held-out usage) | ρ(trust, counterfactual importance) |",
          "|---|---|---|---|"]
for sig in ("abs", "adv"):
    s = sp[sig]
    cell = lambda d: f"{d['mean']:+.3f}, mean abs {d['mean_abs']:.3f} ({d['min']:+.2f}..{d['max']:+.2f}, {d['n']} tables)"
    lines.append(f"| {name[sig]} | {cell(s['credit'])} | {cell(s['usage'])} | {cell(s['importance'])} |")
d = sp["importance_vs_usage"]
lines.append("")
lines.append(f"Counterfactual importance (loss per use) vs held-out usage: mean ρ {d['mean']:+.3f} "
             f"({d['min']:+.2f}..{d['max']:+.2f}, {d['n']} tables).")
lines.append("")

# ---- the selection table, both signals
def load(n):
    return json.load(open(f"{out}/{n}.json"))


router = load("router")
base = router["perplexity"]
rows = [("router", "-", router)]
for sig in ("abs", "adv"):
    for p in sorted(glob.glob(f"{out}/{sig}-blend-*.json"), key=lambda p: -float(p.rsplit("-", 1)[1][:-5])):
        a = p.rsplit("-", 1)[1][:-5]
        rows.append((f"blend α={a}", name[sig], load(os.path.basename(p)[:-5])))
    rows.append(("trust-first ε=0", name[sig], load(f"{sig}-trust-first")))
sig_rows = []
lines += ["| setting | signal | held-out ppl | Δ vs router | entropy (bits) | Gini | changed vs router |",
          "|---|---|---|---|---|---|---|"]
for setting, sig, d in rows:
    m = d["mean"]
    dp = 100 * (d["perplexity"] / base - 1)
    sig_rows.append(dict(setting=setting, signal=sig, ppl=d["perplexity"], dppl_pct=dp, entropy=m["entropy_bits"],
                         gini=m["gini"], changed=m["changed_frac"]))
    lines.append(f"| {setting} | {sig} | {d['perplexity']:.3f} | {dp:+.2f}% | {m['entropy_bits']:.3f} | "
                 f"{m['gini']:.3f} | {m['changed_frac']:.3f} |")
json.dump(sig_rows, open(f"{out}/signals.json", "w"), indent=1)
lines.append("")

# ---- masks
mk_rows = []
lines += ["| mask | masked share of router top-4 slots | unmasked ppl | (a) router next best | (b) learned | (a) loss | (b) loss | (b) recovers |",
          "|---|---|---|---|---|---|---|---|"]
for mk in ("q0", "q1", "q2", "q3", "r1", "r2", "r3"):
    a, b = load(f"mask-{mk}-router"), load(f"mask-{mk}-learned")
    share = sum(l["masked"] for l in a["layers"]) / (sum(l["selections"] for l in a["layers"]) * 4)
    la, lb = a["perplexity"] - base, b["perplexity"] - base
    rec = (la - lb) / la if la else 0.0
    mk_rows.append(dict(mask=mk, masked_share=share, base=base, router=a["perplexity"], learned=b["perplexity"],
                        recovered=rec))
    label = {"q": "quarter ", "r": "random 1/8, seed "}[mk[0]] + mk[1]
    lines.append(f"| {label} | {share:.3f} | {base:.3f} | {a['perplexity']:.3f} | {b['perplexity']:.3f} | "
                 f"{100 * la / base:+.2f}% | {100 * lb / base:+.2f}% | {100 * rec:.1f}% |")
json.dump(mk_rows, open(f"{out}/masks.json", "w"), indent=1)
open(f"{out}/report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
