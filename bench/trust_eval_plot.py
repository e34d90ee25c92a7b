#!/usr/bin/env python3
"""bench/trust_eval_plot.py SUMMARY_JSON PNG: the plot of bench/trust_eval.sh,
held-out perplexity against the mean per-layer entropy of the expert load,
one point per selection setting (all settings, and a zoom on those within
10% of router).  Needs matplotlib."""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = json.load(open(sys.argv[1]))
base = rows[0]["ppl"]

def label(r):
    if r["select"] == "blend":
        return f"α={r['alpha']:g}"
    if r["select"] == "trust-first":
        return f"trust-first ε={r['epsilon']:g}"
    return "router"

def style(r):
    if r["select"] == "router":
        return dict(marker="*", s=220, color="black")
    if r["select"] == "blend":
        return dict(marker="o", s=50, color="tab:blue")
    return dict(marker="s", s=50, color="tab:red")

fig, (ax, az) = plt.subplots(1, 2, figsize=(12, 5))
seen = set()
for r in rows:
    h, p = r["mean"]["entropy_bits"], r["ppl"]
    kind = r["select"]
    ax.scatter(h, p, zorder=3, label=None if kind in seen else kind, **style(r))
    seen.add(kind)
    if kind != "router" and not (kind == "blend" and r["alpha"] == 1):
        ax.annotate(label(r), (h, p), textcoords="offset points", xytext=(6, 4), fontsize=8)
ax.axhline(base * 1.01, color="gray", ls="--", lw=1, label="router ppl + 1%")
ax.set_yscale("log")
ax.set_xlabel("mean per-layer entropy of the expert load (bits; even load = 4)")
ax.set_ylabel("held-out perplexity (trust-eval half, log scale)")
ax.set_title("all settings")
ax.grid(True, which="both", alpha=0.3)
ax.legend(loc="upper right", fontsize=8)

# zoom: the settings within 10% of router, perplexity change in percent
near = [r for r in rows if r["dppl_pct"] < 10]
hs = [r["mean"]["entropy_bits"] for r in near]
h_hi = max(hs) - 0.15 * (max(hs) - min(hs) + 1e-9)
for i, r in enumerate(near):
    h, d = r["mean"]["entropy_bits"], r["dppl_pct"]
    az.scatter(h, d, zorder=3, **style(r))
    if r["select"] == "blend" and r["alpha"] == 1:
        continue  # identical to router
    # labels near the right edge go to the left, alternately above and below
    off = (-48, 10 if i % 2 else -14) if h > h_hi else (7, 5)
    az.annotate(label(r) if r["select"] != "router" else "router = blend α=1", (h, d),
                textcoords="offset points", xytext=off, fontsize=8)
az.axhline(1.0, color="gray", ls="--", lw=1)
az.text(az.get_xlim()[0], 1.05, " goal: within 1% of router", fontsize=8, color="gray", va="bottom")
az.set_xlabel("mean per-layer entropy of the expert load (bits)")
az.set_ylabel("held-out perplexity vs router (%)")
az.set_title("zoom: settings within 10% of router")
az.grid(True, alpha=0.3)
fig.suptitle("brown-moe (8 layers, 16 experts, top-4): trust selection, perplexity vs expert diversity")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print("plot:", sys.argv[2])
