#!/usr/bin/env python3
"""Projects batch-1 decode tokens/s of expert parallelism over N nodes from
measured per-node rates, wire bytes and round trips (bench/RESULTS.md,
"Hosts, emulated: added latency").

  ep_project.py [--plot OUT.png] [--read-gbs R] [--latency-us 0,25,100]
                [--gbit 10,100] [--trips 2,4] [--overhead-us 20.5] [--nodes 1,2,4,8]

The model, per token:
  t = L · (t_attn + E[ max(t_local, max over workers (t_worker) + t_net) ]) + t_head
  t_attn    attention and router weights of a layer read at node 0's rate R
  t_local   node 0's share of the token's top-k experts (k0 experts · bytes / R)
  t_worker  a worker's share (k_w experts · bytes / R), workers in parallel
  t_net     trips · latency + (request + reply bytes) / bandwidth + overhead
  t_head    the lm_head read once per token at R
Node 0 hosts 1/N of every layer's experts (--coordinator-share 1/N), each
worker 1/N; a token's k experts fall on nodes uniformly at random (the
synthetic models' routing), so the expectation is over that draw (Monte
Carlo).  R is the single node's effective read rate: with the defaults, the
omni30b shape decodes at the measured 72.7 ms/token of -np 1 -t 16 on the
16-core device host (6.06 GB read per token at 83 GB/s).  `trips` is the
one-way latencies one layer call costs: 2 in principle (request, reply);
the emulated hosts of bench/mpi_latency.sh measured more (RESULTS.md).
"""
import argparse
import random

L, E, K, H, INTER = 48, 128, 8, 2048, 768
EXPERT_BYTES = 3 * H * INTER * 2          # BF16 gate, up, down
ATTN_BYTES = (32 * 128 * H * 2 + 2 * 4 * 128 * H + E * H) * 2  # q, o, k, v, router
HEAD_BYTES = 152064 * H * 2
WIRE_HEADER = 64
PAIR_BYTES = 8


def per_token_ms(n, read_gbs, lat_us, gbit, trips, overhead_us, samples=20000, seed=1):
    rate = read_gbs * 1e9  # bytes/s
    t_attn = ATTN_BYTES / rate
    t_head = HEAD_BYTES / rate
    e_s = EXPERT_BYTES / rate
    if n == 1:
        return 1e3 * (L * (t_attn + K * e_s) + t_head)
    rng = random.Random(seed)
    # a worker's request: the token's hidden row (F32 wire) and its pairs; its reply: one row
    msg = 2 * WIRE_HEADER + 2 * H * 4 + K * PAIR_BYTES
    t_net_base = trips * lat_us * 1e-6 + msg * 8 / (gbit * 1e9) + overhead_us * 1e-6
    acc = 0.0
    for _ in range(samples):
        per = [0] * n
        for e in rng.sample(range(E), K):
            per[e * n // E] += 1  # contiguous placement: node j hosts experts [jE/n, (j+1)E/n)
        remote = max((c * e_s + t_net_base) for c in per[1:] if c) if any(per[1:]) else 0.0
        acc += max(per[0] * e_s, remote)
    return 1e3 * (L * (t_attn + acc / samples) + t_head)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot")
    ap.add_argument("--read-gbs", type=float, default=83.7)
    ap.add_argument("--latency-us", default="0,25,100")
    ap.add_argument("--gbit", default="10,100")
    ap.add_argument("--trips", default="2")
    ap.add_argument("--overhead-us", type=float, default=20.5)
    ap.add_argument("--nodes", default="1,2,4,8")
    a = ap.parse_args()
    nodes = [int(x) for x in a.nodes.split(",")]
    lats = [float(x) for x in a.latency_us.split(",")]
    gbits = [float(x) for x in a.gbit.split(",")]
    trips = [float(x) for x in a.trips.split(",")]
    print(f"# omni30b shape, batch 1, node read rate {a.read_gbs} GB/s, overhead {a.overhead_us} us per layer call")
    print("| one-way trips per call | latency (one-way) | link | " +
          " | ".join(f"{n} node{'s' if n > 1 else ''}" for n in nodes) + " |")
    print("|---|---|---|" + "---|" * len(nodes))
    curves = {}
    for tr in trips:
        for g in gbits:
            for lat in lats:
                row = [1e3 / per_token_ms(n, a.read_gbs, lat, g, tr, a.overhead_us) for n in nodes]
                curves[(tr, g, lat)] = row
                print(f"| {tr:g} | {lat:g} us | {g:g} Gbit/s | " + " | ".join(f"{v:.1f} tok/s" for v in row) + " |")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for (tr, g, lat), row in curves.items():
            ax.plot(nodes, row, marker="o", linestyle="-" if tr == trips[0] else "--",
                    label=f"{lat:g} us, {g:g} Gbit/s, {tr:g} trips")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("nodes of 16 cores (node 0 also hosts 1/N of the experts)")
        ax.set_ylabel("decode tokens/s, batch 1")
        ax.set_title("omni30b decode at batch 1, projected (one-way trips per layer call)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=100)


if __name__ == "__main__":
    main()
