#!/usr/bin/env python3
"""Plots output tokens/s against concurrent clients from serve_load.py's JSON
lines: serve_load_plot.py OUT.png [--title T] LABEL=FILE.jsonl [LABEL=FILE.jsonl ...]
A client count measured twice in a file (a single client before and after
the others) is plotted at the mean of its rounds."""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

args = sys.argv[2:]
title = "trustmoe serve, omni48-small, 16-token prompts, 32 tokens out"
if len(args) >= 2 and args[0] == "--title":
    title, args = args[1], args[2:]
fig, ax = plt.subplots(figsize=(6, 4))
for arg in args:
    label, path = arg.split("=", 1)
    by = {}
    for l in open(path):
        if l.strip():
            r = json.loads(l)
            by.setdefault(r["clients"], []).append(r["output_tokens_per_s"])
    xs = sorted(by)
    ax.plot(xs, [sum(by[x]) / len(by[x]) for x in xs], marker="o", label=label)
ax.set_xscale("log", base=2)
ax.set_xlabel("concurrent streaming clients")
ax.set_ylabel("output tokens per second")
ax.set_title(title, fontsize=9)
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[1], dpi=100)
