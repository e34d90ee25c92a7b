#!/bin/bash
# generate through the CLI: greedy ids equal the Hugging Face references on
# every fixture, and a batch of prompts (--prompts) gives each prompt's ids.
set -u
T=${TRUSTMOE:-build/trustmoe}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
python3 - "$T" "$W" <<'PY'
import json, subprocess, sys
T, W = sys.argv[1], sys.argv[2]
fails = 0
for fx in ["qwen3moe-bf16", "qwen3moe-v5-fused", "qwen3moe-mixed-sharded", "omni-thinker-bf16"]:
    d = f"tests/fixtures/{fx}"
    man = json.load(open(f"{d}/ref/manifest.json"))
    lines = []
    for p in man["prompts"]:
        ids = ",".join(map(str, p["ids"]))
        lines.append(ids)
        r = subprocess.run([T, "generate", "-m", d, "--ids", ids, "-n", str(len(p["greedy"])), "--temp", "0", "--json"],
                           capture_output=True, text=True, timeout=120)
        out = json.loads(r.stdout)
        ok = r.returncode == 0 and out["ids"] == p["greedy"] and out["prompt_ids"] == p["ids"]
        ok = ok and all(k in out["timings"] for k in ("prefill_ms", "decode_ms_per_token", "tokens_per_second"))
        print(("ok  " if ok else "FAIL"), fx, "prompt", len(p["ids"]), out["ids"])
        fails += not ok
    open(f"{W}/prompts.txt", "w").write("\n".join(lines) + "\n")
    r = subprocess.run([T, "generate", "-m", d, "--prompts", f"{W}/prompts.txt", "-n", "8", "--temp", "0", "--json"],
                       capture_output=True, text=True, timeout=120)
    seqs = json.loads(r.stdout)["sequences"]
    ok = r.returncode == 0 and [q["ids"] for q in seqs] == [p["greedy"] for p in man["prompts"]]
    print(("ok  " if ok else "FAIL"), fx, "batch of", len(seqs))
    fails += not ok
# the same seed samples the same ids; another seed (almost surely) does not
def sample(seed):
    r = subprocess.run([T, "generate", "-m", "tests/fixtures/qwen3moe-bf16", "--ids", "1,2,3", "-n", "16", "--temp", "1.0",
                        "--top-k", "50", "--top-p", "0.9", "-s", str(seed), "--json"], capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout)["ids"]
a, b, c = sample(1), sample(1), sample(2)
ok = a == b and a != c
print(("ok  " if ok else "FAIL"), "seeded sampling", a, c)
fails += not ok
print(f"{fails} failed")
sys.exit(1 if fails else 0)
PY
