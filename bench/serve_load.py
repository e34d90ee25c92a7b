#!/usr/bin/env python3
"""A load generator for `trustmoe serve`: C concurrent clients, each sending
streaming completions with a fixed prompt length and a fixed output length
(ignoring eos: prompts are token ids, max_tokens is what is made unless the
model's eos comes first, and the count is taken from the usage chunk).

    serve_load.py PORT --clients 1,4,16,64 --prompt-len 32 --out-len 64 --requests-per-client 2 [--json OUT]

For each concurrency: output tokens per second over the whole run, time to
first token and inter-token latency at p50 and p99 (per token gap, all
requests).  One JSON line per concurrency goes to stdout.
"""
import argparse
import http.client
import json
import random
import threading
import time


def one_request(port, prompt, out_len, rec):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "max_tokens": out_len, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        rec["errors"] += 1
        r.read()
        return
    times, buf, usage = [], b"", 0
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                continue
            d = json.loads(ev[6:])
            if d.get("usage"):
                usage = d["usage"]["completion_tokens"]
            elif d["choices"] and d["choices"][0].get("text"):
                times.append(time.perf_counter())
    c.close()
    if times:
        rec["ttft"].append(times[0] - t0)
        rec["itl"].extend(b - a for a, b in zip(times, times[1:]))
    rec["tokens"] += usage


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def run(port, clients, prompt_len, out_len, per_client, vocab, seed):
    rnd = random.Random(seed)
    rec = {"ttft": [], "itl": [], "tokens": 0, "errors": 0}
    lock = threading.Lock()

    def client(i):
        mine = {"ttft": [], "itl": [], "tokens": 0, "errors": 0}
        for j in range(per_client):
            prompt = [rnd.randrange(1, vocab) for _ in range(prompt_len)]
            one_request(port, prompt, out_len, mine)
        with lock:
            for k in ("ttft", "itl"):
                rec[k].extend(mine[k])
            rec["tokens"] += mine["tokens"]
            rec["errors"] += mine["errors"]

    t0 = time.perf_counter()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": clients * per_client, "errors": rec["errors"],
            "output_tokens": rec["tokens"], "wall_s": round(wall, 3),
            "output_tokens_per_s": round(rec["tokens"] / wall, 2),
            "ttft_p50_ms": round(1e3 * pct(rec["ttft"], 50), 2) if rec["ttft"] else None,
            "ttft_p99_ms": round(1e3 * pct(rec["ttft"], 99), 2) if rec["ttft"] else None,
            "itl_p50_ms": round(1e3 * pct(rec["itl"], 50), 2) if rec["itl"] else None,
            "itl_p99_ms": round(1e3 * pct(rec["itl"], 99), 2) if rec["itl"] else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--out-len", type=int, default=64)
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=150000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    st, _ = None, None
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    c.request("GET", "/v1/models")
    model = json.loads(c.getresponse().read())["data"][0]
    c.close()
    for n in [int(x) for x in a.clients.split(",")]:
        res = run(a.port, n, a.prompt_len, a.out_len, a.requests_per_client, min(a.vocab, 150000), a.seed)
        res.update({"model": model["id"], "prompt_len": a.prompt_len, "out_len": a.out_len})
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
