#!/bin/bash
# The trained demo model (models/brown-moe) against its PyTorch references:
# tokenization of the held-out text, greedy continuations of the three
# documented prompts, and held-out perplexity within 0.5%.
set -u
T=${TRUSTMOE:-build/trustmoe}
D=models/brown-moe
python3 - "$T" "$D" <<'PY'
import json, struct, subprocess, sys
T, D = sys.argv[1], sys.argv[2]
ref = json.load(open(f"{D}/eval_reference.json"))
fails = 0

# 1. the held-out ids from our tokenizer equal the ids PyTorch evaluated
r = subprocess.run([T, "tokenize", "-m", D, "-f", f"{D}/{ref['heldout_file']}", "--json"], capture_output=True, text=True, timeout=120)
ids = json.loads(r.stdout)
raw = open(f"{D}/heldout_tokens.u16", "rb").read()
want = list(struct.unpack(f"<{len(raw) // 2}H", raw))
ok = r.returncode == 0 and ids[:len(want)] == want and len(ids) == ref["heldout_tokens_total"]
print(("ok  " if ok else "FAIL"), f"held-out tokenization: {len(ids)} ids, first {len(want)} equal to PyTorch's")
fails += not ok

# 2. greedy continuations equal up to the first near-tie (margin < 1e-3)
for s in ref["greedy"]["samples"]:
    r = subprocess.run([T, "generate", "-m", D, "-p", s["prompt"], "-n", str(len(s["generated_ids"])), "--temp", "0", "--json"],
                       capture_output=True, text=True, timeout=120)
    out = json.loads(r.stdout)
    got, exp, marg = out["ids"], s["generated_ids"], s["top2_logit_margins"]
    first = next((i for i in range(len(exp)) if i >= len(got) or got[i] != exp[i]), None)
    ok = r.returncode == 0 and out["prompt_ids"] == s["prompt_ids"] and (first is None or marg[first] < 1e-3)
    print(("ok  " if ok else "FAIL"), repr(s["prompt"]), "->", repr(out.get("text", "")[:70]),
          "identical" if first is None else f"differs at {first} (margin {marg[first]:.2e})")
    fails += not ok

# 3. held-out perplexity with the reference recipe
r = subprocess.run([T, "eval", "-m", D, "--corpus", f"{D}/{ref['heldout_file']}", "--window", str(ref["window_length"])],
                   capture_output=True, text=True, timeout=1800)
line = [l for l in r.stdout.splitlines() if "perplexity" in l]
ppl = float(line[0].split("perplexity")[1].split()[0]) if line else float("nan")
rel = abs(ppl - ref["ppl"]) / ref["ppl"]
ok = r.returncode == 0 and rel <= 0.005
print(("ok  " if ok else "FAIL"), f"held-out perplexity {ppl:.4f} vs PyTorch {ref['ppl']:.4f} ({100 * rel:.4f}% apart)")
fails += not ok
print(f"{fails} failed")
sys.exit(1 if fails else 0)
PY
