#!/usr/bin/env python3
"""Make tiny random Qwen3-MoE / Qwen3-Omni-thinker checkpoints and their
Hugging Face transformers reference outputs.

Run on a machine with torch, transformers and safetensors:

    python3 tools/make_fixtures.py OUTDIR

For each fixture OUTDIR/<name>/ holds a Hugging Face model folder (config.json
plus safetensors) and OUTDIR/<name>/ref/ holds:

    manifest.json          prompts, greedy ids, top-2 margins, shapes
    logits_<p>.f32         raw little-endian float32 [len(prompt), vocab]

Weights are drawn in float32, rounded to the dtype they are stored in, and
the reference runs in float32 with eager attention on exactly those values.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

torch.manual_seed(1234)
torch.use_deterministic_algorithms(True)
DEV = "cpu"  # float32 reference on CPU: no TF32, no reduced-precision GEMMs

VOCAB = 512
HIDDEN = 64
LAYERS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 32          # 4 * 32 = 128 != 64
MOE_INTER = 24         # 2 * 24 = 48 != 64: fused layouts are unambiguous
DENSE_INTER = 80
EXPERTS = 16
TOPK = 4
THETA = 1000000.0
EPS = 1e-6
MROPE = [6, 5, 5]      # sums to HEAD_DIM / 2

PROMPTS = [
    [7],
    [1, 2, 3, 4, 5],
    [100, 37, 499, 256, 3, 3, 3, 42, 17, 211, 9],
    [5, 400, 300, 200, 100, 50, 25, 12, 6, 3, 1, 0, 511, 510, 7, 8, 9],
]
GREEDY_STEPS = 8

DT = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}


def text_kwargs(norm_topk, mlp_only=(), tie=False):
    return dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=DENSE_INTER,
        moe_intermediate_size=MOE_INTER, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
        num_experts=EXPERTS, num_experts_per_tok=TOPK, norm_topk_prob=norm_topk,
        decoder_sparse_step=1, mlp_only_layers=list(mlp_only), rms_norm_eps=EPS,
        max_position_embeddings=256, tie_word_embeddings=tie, hidden_act="silu",
        attention_bias=False, use_sliding_window=False, sliding_window=None,
        router_aux_loss_coef=0.001, output_router_logits=False,
    )


def fill_random(model, gen):
    """Weights scaled so that logits and routing are decisive at this size."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / math.sqrt(p.shape[-1])))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def find_experts(model):
    """Return {layer: (gate [E,I,H], up [E,I,H], down [E,H,I])} from any layout."""
    out = {}
    sd = dict(model.named_parameters())
    for name, p in sd.items():
        if name.endswith("experts.gate_up_proj"):
            layer = int(name.split("layers.")[1].split(".")[0])
            dn = sd[name.replace("gate_up_proj", "down_proj")]
            if p.shape == (EXPERTS, 2 * MOE_INTER, HIDDEN):
                gate, up = p[:, :MOE_INTER, :], p[:, MOE_INTER:, :]
            elif p.shape == (EXPERTS, HIDDEN, 2 * MOE_INTER):
                gate = p[:, :, :MOE_INTER].transpose(1, 2)
                up = p[:, :, MOE_INTER:].transpose(1, 2)
            else:
                raise SystemExit(f"unexpected gate_up_proj shape {tuple(p.shape)}")
            if dn.shape == (EXPERTS, HIDDEN, MOE_INTER):
                down = dn
            elif dn.shape == (EXPERTS, MOE_INTER, HIDDEN):
                down = dn.transpose(1, 2)
            else:
                raise SystemExit(f"unexpected down_proj shape {tuple(dn.shape)}")
            out[layer] = (gate, up, down)
    if not out:  # per-expert ModuleList (transformers v4)
        for layer in range(LAYERS):
            g, u, d = [], [], []
            e = 0
            while f"model.layers.{layer}.mlp.experts.{e}.gate_proj.weight" in sd:
                g.append(sd[f"model.layers.{layer}.mlp.experts.{e}.gate_proj.weight"])
                u.append(sd[f"model.layers.{layer}.mlp.experts.{e}.up_proj.weight"])
                d.append(sd[f"model.layers.{layer}.mlp.experts.{e}.down_proj.weight"])
                e += 1
            if g:
                out[layer] = (torch.stack(g), torch.stack(u), torch.stack(d))
    return out


def hub_tensors(model, prefix=""):
    """State dict in hub naming (per-expert), float32, excluding tied lm_head."""
    experts = find_experts(model)
    t = {}
    for name, p in model.named_parameters():
        if ".mlp.experts." in name:
            continue
        t[prefix + name] = p.detach().clone()
    for layer, (g, u, d) in experts.items():
        for e in range(g.shape[0]):
            base = f"{prefix}model.layers.{layer}.mlp.experts.{e}."
            t[base + "gate_proj.weight"] = g[e].detach().clone().contiguous()
            t[base + "up_proj.weight"] = u[e].detach().clone().contiguous()
            t[base + "down_proj.weight"] = d[e].detach().clone().contiguous()
    return t


def round_params(model, dtype_of):
    """Round every parameter to the dtype it will be stored in."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(p.to(DT[dtype_of(name)]).to(torch.float32))


def write_safetensors(path, tensors, dtype_of):
    out = {k: v.to(DT[dtype_of(k)]).contiguous() for k, v in tensors.items()}
    save_file(out, path, metadata={"format": "pt"})
    return sum(v.numel() * v.element_size() for v in out.values())


def write_sharded(folder, tensors, dtype_of, nshards):
    names = sorted(tensors)
    per = (len(names) + nshards - 1) // nshards
    weight_map, total = {}, 0
    for s in range(nshards):
        part = names[s * per:(s + 1) * per]
        fname = f"model-{s + 1:05d}-of-{nshards:05d}.safetensors"
        total += write_safetensors(os.path.join(folder, fname), {k: tensors[k] for k in part}, dtype_of)
        for k in part:
            weight_map[k] = fname
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


@torch.no_grad()
def reference(forward, folder, note):
    """forward(ids LongTensor[1,T]) -> logits [1,T,V] float32."""
    ref = os.path.join(folder, "ref")
    os.makedirs(ref, exist_ok=True)
    entries = []
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([prompt], dtype=torch.long)
        logits = forward(ids)[0].float()
        logits.numpy().astype("<f4").tofile(os.path.join(ref, f"logits_{i}.f32"))
        seq = list(prompt)
        gen, margins = [], []
        for _ in range(GREEDY_STEPS):
            last = forward(torch.tensor([seq], dtype=torch.long))[0, -1].float()
            top2 = torch.topk(last, 2)
            gen.append(int(top2.indices[0]))
            margins.append(float(top2.values[0] - top2.values[1]))
            seq.append(gen[-1])
        entries.append({"ids": prompt, "logits": f"logits_{i}.f32", "rows": len(prompt),
                        "max_abs_logit": float(logits.abs().max()),
                        "greedy": gen, "greedy_margins": margins})
    with open(os.path.join(ref, "manifest.json"), "w") as f:
        json.dump({"vocab": VOCAB, "note": note, "prompts": entries}, f, indent=1)


def check_inv_freq(model, theta):
    want = 1.0 / (theta ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.int64).float() / HEAD_DIM))
    for name, b in model.named_buffers():
        if name.endswith("inv_freq"):
            assert torch.allclose(b.float().cpu(), want), f"{name} does not match theta {theta}"
            return
    raise SystemExit("no inv_freq buffer found")


def make_qwen3_moe(norm_topk, mlp_only=(), tie=False):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    kw = text_kwargs(norm_topk, mlp_only, tie)
    try:
        cfg = Qwen3MoeConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": THETA})
    except TypeError:
        cfg = Qwen3MoeConfig(**kw, rope_theta=THETA)
    cfg._attn_implementation = "eager"
    model = Qwen3MoeForCausalLM(cfg).to(DEV).float().eval()
    check_inv_freq(model, THETA)
    for i in mlp_only:
        assert not hasattr(model.model.layers[i].mlp, "experts"), "mlp_only_layers not honoured"
    return model


def hub_config(norm_topk, mlp_only=(), tie=False, v5=False):
    c = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
         "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
         "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02,
         "max_window_layers": LAYERS, "attention_dropout": 0.0, "rope_scaling": None,
         "use_cache": True}
    c.update(text_kwargs(norm_topk, mlp_only, tie))
    c.pop("output_router_logits")
    if v5:
        c["num_local_experts"] = c.pop("num_experts")
        c.pop("rope_scaling")
        c["rope_parameters"] = {"rope_type": "default", "rope_theta": THETA}
        c["dtype"] = c.pop("torch_dtype")
        c["transformers_version"] = "5.0.0"
    else:
        c["rope_theta"] = THETA
    return c


def save_config(folder, cfg):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def fixture_qwen3_bf16(out, gen):
    """Hub layout, one BF16 file, per-expert tensors. Also the v5 fused form."""
    model = make_qwen3_moe(True)
    fill_random(model, gen)
    round_params(model, lambda n: "BF16")
    folder = os.path.join(out, "qwen3moe-bf16")
    save_config(folder, hub_config(True))
    t = hub_tensors(model)
    write_safetensors(os.path.join(folder, "model.safetensors"), t, lambda n: "BF16")
    reference(lambda ids: model(input_ids=ids).logits, folder, "Qwen3MoeForCausalLM fp32 eager")

    # transformers-v5 form: fused experts, rope_parameters, num_local_experts
    fused = {k: v for k, v in t.items() if ".mlp.experts." not in k}
    for layer, (g, u, d) in find_experts(model).items():
        fused[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.cat([g, u], dim=1).detach().contiguous()
        fused[f"model.layers.{layer}.mlp.experts.down_proj"] = d.detach().contiguous()
    folder5 = os.path.join(out, "qwen3moe-v5-fused")
    save_config(folder5, hub_config(True, v5=True))
    write_safetensors(os.path.join(folder5, "model.safetensors"), fused, lambda n: "BF16")


def mixed_dtype(name):
    if "embed_tokens" in name:
        return "F32"
    if "norm" in name:
        return "F64"
    if "self_attn" in name and "proj" in name:
        return "F16"
    if name.endswith("mlp.gate.weight"):
        return "F32"
    if "inv_freq" in name:
        return "F64"
    return "BF16"


def fixture_qwen3_mixed(out, gen):
    """Three shards, mixed dtypes, a dense layer, tied embeddings, no top-k renorm,
    and a float64 rotary_emb.inv_freq buffer that must be ignored."""
    model = make_qwen3_moe(False, mlp_only=(1,), tie=True)
    fill_random(model, gen)
    round_params(model, mixed_dtype)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    folder = os.path.join(out, "qwen3moe-mixed-sharded")
    save_config(folder, hub_config(False, mlp_only=(1,), tie=True))
    t = hub_tensors(model)
    t.pop("lm_head.weight", None)
    # a bogus float64 buffer: a loader that used it would get wrong RoPE
    t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.linspace(0.5, 3.0, HEAD_DIM // 2, dtype=torch.float64)
    write_sharded(folder, t, mixed_dtype, 3)
    reference(lambda ids: model(input_ids=ids).logits, folder,
              "Qwen3MoeForCausalLM fp32 eager, tied, mlp_only_layers=[1], norm_topk_prob=false")


def omni_text_config():
    from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as C
    kw = text_kwargs(True)
    rp = {"rope_type": "default", "rope_theta": THETA, "mrope_section": MROPE,
          "interleaved": True, "mrope_interleaved": True}
    try:
        tc = C.Qwen3OmniMoeTextConfig(**kw, rope_parameters=rp)
    except TypeError:
        tc = C.Qwen3OmniMoeTextConfig(**kw, rope_theta=THETA, rope_scaling=rp)
    tc._attn_implementation = "eager"
    return C, tc


def fixture_omni(out, gen):
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as M
    C, tc = omni_text_config()
    path = None
    try:
        thinker_cfg = C.Qwen3OmniMoeThinkerConfig(
            text_config=tc.to_dict(),
            audio_config={"num_hidden_layers": 1, "d_model": 32, "encoder_layers": 1,
                          "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "output_dim": HIDDEN,
                          "downsample_hidden_size": 16, "num_mel_bins": 16},
            vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                           "out_hidden_size": HIDDEN, "deepstack_visual_indexes": [0], "patch_size": 4,
                           "spatial_merge_size": 2, "temporal_patch_size": 2},
        )
        thinker_cfg._attn_implementation = "eager"
        thinker_cfg.text_config._attn_implementation = "eager"
        model = M.Qwen3OmniMoeThinkerForConditionalGeneration(thinker_cfg).float().eval()
        text = model.model
        path = "Qwen3OmniMoeThinkerForConditionalGeneration"
    except Exception as exc:  # fall back to the text model the thinker wraps
        print("thinker construction failed, using the text model:", repr(exc)[:300])
        text = M.Qwen3OmniMoeThinkerTextModel(tc).float().eval()
        model = torch.nn.Module()
        model.model = text
        model.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
        path = "Qwen3OmniMoeThinkerTextModel + lm_head"
    check_inv_freq(text, THETA)
    text_params = torch.nn.Module()
    text_params.model = model.model
    text_params.lm_head = model.lm_head
    fill_random(text_params, gen)
    round_params(text_params, lambda n: "BF16")

    folder = os.path.join(out, "omni-thinker-bf16")
    cfg = {"architectures": ["Qwen3OmniMoeForConditionalGeneration"], "model_type": "qwen3_omni_moe",
           "enable_audio_output": True, "im_start_token_id": 151644, "im_end_token_id": 151645,
           "transformers_version": "4.57.0.dev0",
           "thinker_config": {"model_type": "qwen3_omni_moe_thinker", "audio_token_id": 151675,
                              "text_config": dict(hub_config(True), model_type="qwen3_omni_moe_text",
                                                  rope_scaling={"interleaved": True, "mrope_interleaved": True,
                                                                "mrope_section": MROPE, "rope_type": "default",
                                                                "type": "default"},
                                                  shared_expert_intermediate_size=0),
                              "audio_config": {"d_model": 32}, "vision_config": {"depth": 1}},
           "talker_config": {"text_config": {"num_experts": 4, "hidden_size": 16}}}
    for k in ("architectures", "transformers_version", "torch_dtype"):
        cfg["thinker_config"]["text_config"].pop(k, None)
    save_config(folder, cfg)
    t = hub_tensors(text_params, prefix="thinker.")
    # tensors of the other towers: present in real checkpoints, to be ignored
    t["thinker.audio_tower.conv1.weight"] = torch.randn(8, 4, 3)
    t["thinker.visual.patch_embed.proj.weight"] = torch.randn(8, 3, 2, 2)
    t["talker.model.layers.0.mlp.shared_expert.gate_proj.weight"] = torch.randn(8, 16)
    t["code2wav.decoder.0.weight"] = torch.randn(4, 4)
    write_sharded(folder, t, lambda n: "BF16", 2)

    def fwd(ids):
        return model.lm_head(text(input_ids=ids).last_hidden_state)
    if path.startswith("Qwen3OmniMoeThinkerForConditionalGeneration"):
        try:
            a = model(input_ids=torch.tensor([PROMPTS[2]])).logits
            b = fwd(torch.tensor([PROMPTS[2]]))
            print("thinker forward vs text model + lm_head: max diff", float((a - b).abs().max()))
            fwd = lambda ids: model(input_ids=ids).logits  # noqa: E731
        except Exception as exc:
            print("thinker forward failed, using text model + lm_head:", repr(exc)[:300])
            path += " (forward through text model + lm_head)"
    reference(fwd, folder, path + " fp32 eager, text-only (MRoPE axes equal)")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    os.makedirs(out, exist_ok=True)
    import transformers
    print("transformers", transformers.__version__, "torch", torch.__version__)
    gen = torch.Generator().manual_seed(20261126)
    fixture_qwen3_bf16(out, gen)
    import shutil
    shutil.copytree(os.path.join(out, "qwen3moe-bf16", "ref"), os.path.join(out, "qwen3moe-v5-fused", "ref"))
    fixture_qwen3_mixed(out, gen)
    fixture_omni(out, gen)
    with open(os.path.join(out, "VERSIONS.txt"), "w") as f:
        f.write(f"transformers {transformers.__version__}\ntorch {torch.__version__}\n")
    print("done")


if __name__ == "__main__":
    main()
