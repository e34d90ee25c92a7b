#!/usr/bin/env python3
"""Plots output tokens/s against concurrent clients from serve_load.py's JSON
lines: serve_load_plot.py OUT.png LABEL=FILE.jsonl [LABEL=FILE.jsonl ...]"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 4))
for arg in sys.argv[2:]:
    label, path = arg.split("=", 1)
    rows = [json.loads(l) for l in open(path) if l.strip()]
    ax.plot([r["clients"] for r in rows], [r["output_tokens_per_s"] for r in rows], marker="o", label=label)
ax.set_xscale("log", base=2)
ax.set_xlabel("concurrent streaming clients")
ax.set_ylabel("output tokens per second")
ax.set_title("trustmoe serve, omni48-small, 16-token prompts, 32 tokens out")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[1], dpi=100)
