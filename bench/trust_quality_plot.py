#!/usr/bin/env python3
"""bench/trust_quality_plot.py: the PNGs of the trust-quality measurements.

  trust_quality_plot.py OUTDIR            (bench/trust_quality.sh's OUTDIR)
      -> bench/trust_signals.png, bench/trust_substitutes.png
  trust_quality_plot.py --coactivation OUTDIR   (bench/coactivation.sh's)
      -> bench/coactivation.png
"""
import json, sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def signals(out):
    rows = json.load(open(f"{out}/signals.json"))
    sp = json.load(open(f"{out}/spearman.json"))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    r = rows[0]
    ax.scatter([r["entropy"]], [r["dppl_pct"]], c="k", marker="*", s=120, label="router", zorder=3)
    for sig, col in (("absolute", "tab:red"), ("advantage", "tab:blue")):
        b = [x for x in rows if x["signal"] == sig and x["setting"].startswith("blend")]
        ax.plot([x["entropy"] for x in b], [x["dppl_pct"] for x in b], "o-", c=col, label=f"blend, {sig}")
        for x in b:
            ax.annotate(x["setting"].split("=")[1], (x["entropy"], x["dppl_pct"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("expert-load entropy, bits (mean over layers)")
    ax.set_ylabel("held-out perplexity vs router, % (symlog)")
    ax.set_title("blend α sweep: absolute vs advantage signal")
    ax.legend(fontsize=8)
    labels = ["last-window credit", "held-out usage", "counterfactual\nimportance"]
    keys = ["credit", "usage", "importance"]
    w = 0.38
    for i, (sig, col) in enumerate((("abs", "tab:red"), ("adv", "tab:blue"))):
        v = [sp[sig][k]["mean"] for k in keys]
        lo = [sp[sig][k]["mean"] - sp[sig][k]["min"] for k in keys]
        hi = [sp[sig][k]["max"] - sp[sig][k]["mean"] for k in keys]
        bx.bar([j + (i - 0.5) * w for j in range(3)], v, w, yerr=[lo, hi], color=col, capsize=3,
               label={"abs": "absolute", "adv": "advantage"}[sig])
    bx.axhline(0, c="k", lw=0.8)
    for y in (0.3, -0.3):
        bx.axhline(y, c="gray", ls=":", lw=0.8)
    bx.set_xticks(range(3))
    bx.set_xticklabels(labels, fontsize=8)
    bx.set_ylabel("Spearman ρ of trust, per (context, layer)\nmean, bars: min..max")
    bx.set_title("what trust tracks")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig("bench/trust_signals.png", dpi=110)

    m = json.load(open(f"{out}/masks.json"))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs = range(len(m))
    ax.bar([x - 0.2 for x in xs], [100 * (r["router"] / r["base"] - 1) for r in m], 0.4, label="(a) router next best",
           color="tab:gray")
    ax.bar([x + 0.2 for x in xs], [100 * (r["learned"] / r["base"] - 1) for r in m], 0.4,
           label="(b) learned substitute", color="tab:green")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([("quarter " if r["mask"][0] == "q" else "random 1/8 s") + r["mask"][1] for r in m], fontsize=8)
    ax.set_ylabel("held-out perplexity vs unmasked router, %")
    ax.set_title("masked experts on brown-moe: substitutes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig("bench/trust_substitutes.png", dpi=110)


def coactivation(out):
    res = json.load(open(f"{out}/placement.json"))
    pls = ["contiguous", "round-robin", "balanced", "coactivation"]
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (model, title) in zip(axs, (("brown", "brown-moe (trained)"), ("synth", "synthetic tiny (random)"))):
        v = [res[f"{model}/{p}"]["fanout"] for p in pls]
        imb = [res[f"{model}/{p}"]["load_imbalance"] for p in pls]
        bars = ax.bar(pls, v, color=["tab:gray", "tab:gray", "tab:gray", "tab:blue"])
        for b, x, i in zip(bars, v, imb):
            ax.annotate(f"{x:.2f}\nimb {i:.2f}", (b.get_x() + b.get_width() / 2, x), ha="center", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_ylim(0, 4.4)
        ax.set_ylabel("workers contacted per (token, layer)")
        ax.set_title(f"{title}, 4 workers, top-4 of 16")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig("bench/coactivation.png", dpi=110)


if sys.argv[1] == "--coactivation":
    coactivation(sys.argv[2])
else:
    signals(sys.argv[1])
