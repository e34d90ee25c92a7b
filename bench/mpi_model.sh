#!/bin/bash
# mpi_model.sh: write a synthetic Qwen3-MoE checkpoint (Hugging Face layout,
# BF16, one expert per tensor) for the MPI benchmarks.  Weights are random but
# finite (|w| in [2^-7, 2^-5)), norms are 1.  Python standard library only.
#
#   bench/mpi_model.sh DIR LAYERS EXPERTS TOP_K HIDDEN MOE_INTER [VOCAB]
#   bench/mpi_model.sh /tmp/m64 2 128 8 1024 512
set -euo pipefail
[ $# -ge 6 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
python3 - "$@" <<'PY'
import json, os, struct, sys
d, L, E, K, H, I = sys.argv[1], *map(int, sys.argv[2:7])
V = int(sys.argv[7]) if len(sys.argv) > 7 else 1024
heads, kv, D = 8, 4, max(H // 8, 16)
os.makedirs(d, exist_ok=True)
cfg = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "torch_dtype": "bfloat16",
    "vocab_size": V, "hidden_size": H, "intermediate_size": 2 * H, "moe_intermediate_size": I,
    "num_hidden_layers": L, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": D,
    "num_experts": E, "num_experts_per_tok": K, "norm_topk_prob": True, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
    "tie_word_embeddings": False, "rope_theta": 1000000.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "attention_bias": False,
}
json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
t = [("model.embed_tokens.weight", [V, H]), ("model.norm.weight", [H]), ("lm_head.weight", [V, H])]
for l in range(L):
    p = f"model.layers.{l}."
    t += [(p + "input_layernorm.weight", [H]), (p + "post_attention_layernorm.weight", [H]),
          (p + "self_attn.q_proj.weight", [heads * D, H]), (p + "self_attn.k_proj.weight", [kv * D, H]),
          (p + "self_attn.v_proj.weight", [kv * D, H]), (p + "self_attn.o_proj.weight", [H, heads * D]),
          (p + "self_attn.q_norm.weight", [D]), (p + "self_attn.k_norm.weight", [D]),
          (p + "mlp.gate.weight", [E, H])]
    for e in range(E):
        q = f"{p}mlp.experts.{e}."
        t += [(q + "gate_proj.weight", [I, H]), (q + "up_proj.weight", [I, H]), (q + "down_proj.weight", [H, I])]
hdr, off = {}, 0
for name, shape in t:
    n = 2
    for s in shape: n *= s
    hdr[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
    off += n
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
# high byte of each BF16: random sign, exponent 120..121 with the low byte's top bit
hi = bytes((b & 0x80) | 0x3C for b in range(256))
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name, shape in t:
        n = 1
        for s in shape: n *= s
        if name.endswith("norm.weight"):
            f.write(b"\x80\x3f" * n)  # 1.0
            continue
        b = bytearray(os.urandom(2 * n))
        b[1::2] = b[1::2].translate(hi)
        f.write(b)
print(f"{d}: {L} layers x {E} experts (top-{K}), hidden {H}, moe_inter {I}, vocab {V}, {off / 2**20:.1f} MiB BF16")
PY
