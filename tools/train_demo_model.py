#!/usr/bin/env python3
"""Train the demo model models/brown-moe: a byte-level BPE tokenizer and a small
Qwen3-MoE (transformers' own Qwen3MoeForCausalLM) on the Brown corpus.

    python3 tools/prepare_brown.py                      # -> .devdata/brown_{train,heldout}.txt
    python3 tools/train_demo_model.py --data .devdata --out models/brown-moe

Needs a CUDA GPU, torch, transformers (5.x), tokenizers, safetensors; matplotlib
for the loss-curve PNG (a CSV is always written).  Deterministic given --seed:
fixed data order, torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG.

Steps:
 1. tokenizer: BPE on the train split (NFC; Split(Qwen2 regex, isolated) then
    ByteLevel(add_prefix_space=false, use_regex=false); ByteLevel decoder);
    the special tokens take the last three ids.
 2. model: Qwen3MoeForCausalLM, fp32 master weights, bf16 autocast, AdamW,
    fixed number of steps.  Training windows are non-overlapping slices of the
    encoded train text (start offset and order change with the epoch, drawn
    from a generator seeded with --seed).
 3. the weights are rounded to bf16 (exactly what is saved); held-out
    perplexity is measured in float32 (see eval_recipe() for the exact recipe).
 4. greedy decoding of three prompts in float32.
 5. writes OUT: config.json, generation_config.json, model.safetensors (bf16,
    per-expert hub names), tokenizer.json, tokenizer_config.json,
    eval_reference.json, heldout_tokens.u16, heldout.txt, data_split.json, loss.csv,
    loss_curve.png, train_info.json.  README.md is written by hand from train_info.json.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
import traceback

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPTS = ["The jury said", "In the city of", "He looked at the"]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------- tokenizer

def read_docs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text, text.rstrip("\n").split("\n\n")


def train_tokenizer(train_docs, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIALS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    # each document followed by its separator, so "\n" and "\n\n" are seen as in the file
    tok.train_from_iterator((d + "\n\n" for d in train_docs), trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


def tokenizer_config(tok):
    added = {}
    for s in SPECIALS:
        added[str(tok.token_to_id(s))] = {"content": s, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
    return {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None, "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "model_max_length": 512, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }


# ----------------------------------------------------------------------------- model

def model_kwargs(a, vocab):
    return dict(
        vocab_size=vocab, hidden_size=a.hidden, intermediate_size=a.dense_inter,
        moe_intermediate_size=a.moe_inter, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
        num_experts=a.experts, num_experts_per_tok=a.topk, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6,
        max_position_embeddings=a.seq, tie_word_embeddings=True, hidden_act="silu",
        attention_bias=False, attention_dropout=0.0, use_sliding_window=False, sliding_window=None,
        router_aux_loss_coef=a.aux_coef, output_router_logits=False, initializer_range=0.02,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def param_count(a, vocab):
    attn = a.hidden * a.heads * a.head_dim * 2 + a.hidden * a.kv_heads * a.head_dim * 2
    layer = attn + a.experts * a.hidden + a.experts * 3 * a.hidden * a.moe_inter + 2 * a.hidden + 2 * a.head_dim
    return a.layers * layer + vocab * a.hidden + a.hidden


def set_impl(model, attn, experts):
    for fn, val, key in (("set_attn_implementation", attn, "_attn_implementation"),
                         ("set_experts_implementation", experts, "_experts_implementation")):
        done = False
        if hasattr(model, fn):
            try:
                getattr(model, fn)(val)
                done = True
            except Exception as e:  # noqa: BLE001
                log(f"  {fn}({val}) failed: {e!r}"[:300])
        if not done:
            setattr(model.config, key, val)
    return getattr(model.config, "_attn_implementation", "?"), getattr(model.config, "_experts_implementation", "?")


def build_model(a, vocab, seed, bos, eos):
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    kw = model_kwargs(a, vocab)
    kw.update(bos_token_id=bos, eos_token_id=eos)
    try:
        cfg = Qwen3MoeConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta})
    except TypeError:
        cfg = Qwen3MoeConfig(**kw, rope_theta=a.rope_theta)
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(cfg)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "embeddings not tied"
    return model.cuda().float()


def expert_tensors(model, a):
    """{layer: (gate [E,I,H], up [E,I,H], down [E,H,I])} from transformers' fused layout."""
    sd = dict(model.named_parameters())
    E, I, H = a.experts, a.moe_inter, a.hidden
    out = {}
    for name, p in sd.items():
        if not name.endswith("mlp.experts.gate_up_proj"):
            continue
        layer = int(name.split("layers.")[1].split(".")[0])
        dn = sd[name.replace("gate_up_proj", "down_proj")]
        if tuple(p.shape) == (E, 2 * I, H):
            gate, up = p[:, :I, :], p[:, I:, :]
        elif tuple(p.shape) == (E, H, 2 * I):
            gate, up = p[:, :, :I].transpose(1, 2), p[:, :, I:].transpose(1, 2)
        else:
            raise SystemExit(f"unexpected {name} shape {tuple(p.shape)}")
        if tuple(dn.shape) == (E, H, I):
            down = dn
        elif tuple(dn.shape) == (E, I, H):
            down = dn.transpose(1, 2)
        else:
            raise SystemExit(f"unexpected down_proj shape {tuple(dn.shape)}")
        out[layer] = (gate, up, down)
    if len(out) != a.layers:
        raise SystemExit(f"found fused experts for {len(out)} layers, want {a.layers}: {list(sd)[:20]}")
    return out


def hub_state_dict(model, a):
    import torch
    t = {}
    for name, p in model.named_parameters():
        if ".mlp.experts." in name:
            continue
        t[name] = p.detach().to(torch.bfloat16).cpu().contiguous()
    t.pop("lm_head.weight", None)  # tied
    for layer, (g, u, d) in expert_tensors(model, a).items():
        for e in range(a.experts):
            base = f"model.layers.{layer}.mlp.experts.{e}."
            t[base + "gate_proj.weight"] = g[e].detach().to(torch.bfloat16).cpu().contiguous()
            t[base + "up_proj.weight"] = u[e].detach().to(torch.bfloat16).cpu().contiguous()
            t[base + "down_proj.weight"] = d[e].detach().to(torch.bfloat16).cpu().contiguous()
    return t


def hub_config(a, vocab, bos, eos, tf_version):
    c = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe"}
    kw = model_kwargs(a, vocab)
    kw.pop("output_router_logits")
    kw.pop("pad_token_id")
    c.update(kw)
    c.update(bos_token_id=bos, eos_token_id=eos, rope_theta=a.rope_theta, rope_scaling=None,
             max_window_layers=a.layers, torch_dtype="bfloat16", use_cache=True,
             output_router_logits=False, transformers_version=tf_version)
    return dict(sorted(c.items()))


# ----------------------------------------------------------------------------- data / training

def train_batches(train_ids, a, seed):
    """Deterministic stream of [B, seq] LongTensors (CPU)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    n = train_ids.numel()
    epoch = 0
    while True:
        off = int(torch.randint(0, a.seq, (1,), generator=g))
        nwin = (n - off) // a.seq
        starts = off + a.seq * torch.randperm(nwin, generator=g)
        for i in range(0, nwin - a.batch + 1, a.batch):
            idx = starts[i:i + a.batch, None] + torch.arange(a.seq)[None, :]
            yield epoch, train_ids[idx]
        epoch += 1


def lr_at(step, a):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, train_ids, heldout_windows, a, seed, steps, record=None):
    import torch
    import torch.nn.functional as F
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if (p.ndim < 2 or "norm" in n) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    model.train()
    losses = []
    t0 = time.time()
    batches = train_batches(train_ids, a, seed)
    for step in range(steps):
        epoch, x = next(batches)
        x = x.cuda(non_blocking=True)
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, a)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=x, output_router_logits=a.aux_coef > 0, use_cache=False)
        logits = out.logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        total = loss
        aux = getattr(out, "aux_loss", None)
        if a.aux_coef > 0 and aux is not None:
            total = loss + a.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        lv = loss.item()
        losses.append(lv)
        if record is not None:
            row = {"step": step + 1, "epoch": epoch, "lr": lr_at(step, a), "train_loss": lv,
                   "aux_loss": float(aux.detach()) if aux is not None else float("nan"),
                   "grad_norm": float(gnorm), "time_s": time.time() - t0, "heldout_loss": float("nan")}
            if (step + 1) % a.eval_every == 0 or step + 1 == steps:
                row["heldout_loss"] = quick_heldout(model, heldout_windows)
                model.train()
                log(f"step {step + 1:5d} ep {epoch:3d} lr {row['lr']:.2e} loss {lv:.4f} "
                    f"aux {row['aux_loss']:.3f} heldout {row['heldout_loss']:.4f} t {row['time_s']:.1f}s")
            record.append(row)
            if a.max_train_seconds and row["time_s"] > a.max_train_seconds:
                log(f"stopping early at step {step + 1}: over --max-train-seconds {a.max_train_seconds}")
                break
    torch.cuda.synchronize()
    return losses, time.time() - t0


def quick_heldout(model, windows):
    """bf16-autocast held-out loss during training (the curve); the reported number is eval_fp32."""
    import torch
    import torch.nn.functional as F
    model.eval()
    tot, cnt = 0.0, 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(0, windows.shape[0], 64):
            x = windows[i:i + 64].cuda()
            lg = model(input_ids=x, use_cache=False).logits.float()
            ce = F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
            tot += float(ce)
            cnt += x[:, 1:].numel()
    return tot / cnt


# ----------------------------------------------------------------------------- eval

def eval_recipe(L):
    return (f"Encode brown_heldout.txt (models/brown-moe/heldout.txt) as ONE string with tokenizer.json, "
            f"no special tokens added (no BOS). Cut the ids into non-overlapping windows of {L} tokens "
            f"starting at 0 (window k = ids[{L}k : {L}k+{L}]); drop the last partial window. Each window is "
            f"a separate sequence at positions 0..{L - 1} (no KV cache carried over). Within a window, "
            f"token t+1 is predicted from tokens 0..t for t = 0..{L - 2}: {L - 1} predictions per window; "
            f"the first token of a window is not predicted. CE = -log softmax(logits)[next id], natural log, "
            f"logits in float32 from the bf16 weights widened to float32. mean_ce = sum of all CE / number of "
            f"predictions; ppl = exp(mean_ce).")


def eval_fp32(model, windows):
    import torch
    import torch.nn.functional as F
    model.eval()
    per_win = []
    with torch.no_grad():
        for i in range(0, windows.shape[0], 16):
            x = windows[i:i + 16].cuda()
            lg = model(input_ids=x, use_cache=False).logits.float()
            ce = F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1),
                                 reduction="none").view(x.shape[0], -1).double()
            per_win.extend(ce.sum(1).tolist())
    n_pred = windows.shape[0] * (windows.shape[1] - 1)
    total = sum(per_win)
    return total / n_pred, [s / (windows.shape[1] - 1) for s in per_win]


def greedy(model, tok, prompt, n):
    import torch
    ids = tok.encode(prompt, add_special_tokens=False).ids
    seq = list(ids)
    margins = []
    with torch.no_grad():
        for _ in range(n):
            lg = model(input_ids=torch.tensor([seq], device="cuda"), use_cache=False).logits[0, -1].float()
            top = torch.topk(lg, 2)
            seq.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
    gen = seq[len(ids):]
    return {"prompt": prompt, "prompt_ids": ids, "generated_ids": gen,
            "generated_text": tok.decode(gen, skip_special_tokens=False),
            "full_text": tok.decode(seq, skip_special_tokens=False), "top2_logit_margins": margins}


# ----------------------------------------------------------------------------- outputs

def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(s, [r["train_loss"] for r in rows], lw=0.8, label="train (batch)")
    hs = [(r["step"], r["heldout_loss"]) for r in rows if r["heldout_loss"] == r["heldout_loss"]]
    ax.plot([h[0] for h in hs], [h[1] for h in hs], "o-", ms=3, label="held-out (bf16 autocast)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("brown-moe training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".devdata")
    ap.add_argument("--out", default="models/brown-moe")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--moe-inter", type=int, default=64)
    ap.add_argument("--dense-inter", type=int, default=512, help="unused: every layer is MoE")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--seq", type=int, default=512, help="training window and max_position_embeddings")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--eval-window", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--gen-tokens", type=int, default=40)
    ap.add_argument("--attn", default="eager", help="attention implementation for training")
    ap.add_argument("--experts-impl", default="grouped_mm,eager",
                    help="experts implementations to try for training, first that runs wins")
    ap.add_argument("--det-check-steps", type=int, default=30,
                    help="re-run this many steps from scratch and compare losses bit for bit (0: skip)")
    ap.add_argument("--max-bytes", type=int, default=16_000_000)
    ap.add_argument("--max-train-seconds", type=float, default=0,
                    help="safety stop for the main run (0: none); a stopped run is not the recipe")
    a = ap.parse_args()

    import torch
    import transformers
    import tokenizers
    import safetensors
    from safetensors.torch import save_file

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    gpu = torch.cuda.get_device_name(0)
    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
            "gpu": gpu, "args": vars(a), "command": " ".join(["python3"] + sys.argv)}
    log(json.dumps(info))
    os.makedirs(a.out, exist_ok=True)
    T0 = time.time()

    # 1. tokenizer
    train_text, train_docs = read_docs(os.path.join(a.data, "brown_train.txt"))
    held_text, held_docs = read_docs(os.path.join(a.data, "brown_heldout.txt"))
    t = time.time()
    tok = train_tokenizer(train_docs, a.vocab)
    vocab = tok.get_vocab_size()
    eot = tok.token_to_id("<|endoftext|>")
    log(f"tokenizer: vocab {vocab}, specials {[tok.token_to_id(s) for s in SPECIALS]}, {time.time() - t:.1f}s")
    assert vocab == a.vocab, f"vocab {vocab} != {a.vocab}"
    tok.save(os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(tok), f, indent=2)
    for s in ["Hello world", " Hello world", "It's 1961.\n\nThe jury", "naïve café"]:
        e = tok.encode(s)
        log(f"  {s!r} -> {e.ids} {e.tokens} -> {tok.decode(e.ids)!r}")
    train_ids = torch.tensor(tok.encode(train_text, add_special_tokens=False).ids, dtype=torch.long)
    held_ids = torch.tensor(tok.encode(held_text, add_special_tokens=False).ids, dtype=torch.long)
    log(f"train tokens {train_ids.numel()}, held-out tokens {held_ids.numel()}, "
        f"chars/token {len(train_text) / train_ids.numel():.3f}")
    L = a.eval_window
    nwin = held_ids.numel() // L
    windows = held_ids[:nwin * L].view(nwin, L)

    # 2. model
    n_params = param_count(a, vocab)
    log(f"parameters {n_params} -> bf16 {2 * n_params} bytes")
    assert 2 * n_params < a.max_bytes - 1_500_000, "model too large for the size budget"
    impl = None
    for cand in a.experts_impl.split(","):
        try:
            m = build_model(a, vocab, a.seed, eot, eot)
            got = set_impl(m, a.attn, cand)
            x = train_ids[:2 * a.seq].view(2, a.seq).cuda()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                o = m(input_ids=x, output_router_logits=a.aux_coef > 0, use_cache=False)
            (o.logits.float().mean() + (o.aux_loss if o.aux_loss is not None else 0)).backward()
            torch.cuda.synchronize()
            impl = cand
            log(f"training implementations: attention/experts {got}, aux_loss {o.aux_loss}")
            del m, o
            break
        except Exception as e:  # noqa: BLE001
            log(f"experts implementation {cand} failed: {e!r}"[:500])
    if impl is None:
        raise SystemExit("no experts implementation ran")
    info["train_impl"] = {"attention": a.attn, "experts": impl}

    model = build_model(a, vocab, a.seed, eot, eot)
    set_impl(model, a.attn, impl)
    rows = []
    losses, train_s = train(model, train_ids, windows, a, a.seed, a.steps, record=rows)
    done = len(losses)
    info.update(train_seconds=train_s, steps=done, steps_planned=a.steps, tokens_seen=done * a.batch * a.seq,
                epochs=done * a.batch * a.seq / train_ids.numel(),
                final_train_loss=losses[-1], final_train_loss_mean_last50=sum(losses[-50:]) / len(losses[-50:]))
    log(f"training: {done} steps in {train_s:.1f}s on {gpu}; final loss {losses[-1]:.4f}")
    with open(os.path.join(a.out, "loss.csv"), "w") as f:
        keys = list(rows[0])
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + "\n")
    try:
        plot(rows, os.path.join(a.out, "loss_curve.png"))
    except Exception as e:  # noqa: BLE001
        log(f"plot failed: {e!r}")

    # 3. round to bf16, save
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    sd = hub_state_dict(model, a)
    save_file(sd, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    cfg = hub_config(a, vocab, eot, eot, transformers.__version__)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot, "do_sample": False,
                   "max_new_tokens": a.gen_tokens, "transformers_version": transformers.__version__}, f, indent=2)
    log(f"saved {len(sd)} tensors, {sum(v.numel() for v in sd.values())} parameters")

    # 3b. fp32 eval on the rounded weights
    set_impl(model, "eager", "eager")
    t = time.time()
    mean_ce, per_win = eval_fp32(model, windows)
    ppl = math.exp(mean_ce)
    log(f"held-out fp32: {nwin} windows x {L}, {nwin * (L - 1)} predictions, mean CE {mean_ce:.6f}, "
        f"ppl {ppl:.4f} ({time.time() - t:.1f}s)")
    windows.numpy().astype("<u2").tofile(os.path.join(a.out, "heldout_tokens.u16"))
    ref = {
        "recipe": eval_recipe(L),
        "heldout_file": "heldout.txt", "heldout_chars": len(held_text),
        "heldout_tokens_total": held_ids.numel(), "window_length": L, "num_windows": nwin,
        "tokens_evaluated": nwin * L, "predictions": nwin * (L - 1),
        "mean_ce": mean_ce, "ppl": ppl, "dtype": "float32 compute on bf16 weights",
        "ids_sha256": hashlib.sha256(windows.numpy().astype("<u4").tobytes()).hexdigest(),
        "ids_sha256_of": "the evaluated ids (num_windows*window_length) as little-endian uint32",
        "heldout_tokens_u16": "heldout_tokens.u16: the same evaluated ids as little-endian uint16",
        "first_windows": [{"window": k, "ids": windows[k].tolist(), "mean_ce": per_win[k]} for k in range(4)],
        "per_window_mean_ce": per_win,
    }

    # 4. greedy
    ref["greedy"] = {"dtype": "float32", "new_tokens": a.gen_tokens,
                     "rule": "argmax of the last position's logits, no BOS, no sampling, full recompute",
                     "samples": []}
    for p in PROMPTS:
        g = greedy(model, tok, p, a.gen_tokens)
        ref["greedy"]["samples"].append(g)
        log(f"greedy {p!r} -> {g['generated_text']!r}")
    with open(os.path.join(a.out, "eval_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    shutil.copyfile(os.path.join(a.data, "brown_heldout.txt"), os.path.join(a.out, "heldout.txt"))
    split_json = os.path.join(a.data, "brown_split.json")
    if os.path.exists(split_json):
        shutil.copyfile(split_json, os.path.join(a.out, "data_split.json"))

    # 5. checks: reload through transformers from the written folder; determinism
    try:
        from transformers import Qwen3MoeForCausalLM
        m2 = Qwen3MoeForCausalLM.from_pretrained(a.out, dtype=torch.float32).cuda()
        set_impl(m2, "eager", "eager")
        with torch.no_grad():
            x = windows[:2].cuda()
            d = (m2(input_ids=x).logits.float() - model(input_ids=x).logits.float()).abs().max().item()
        info["reload_max_abs_logit_diff"] = d
        log(f"reload check: from_pretrained(out) vs in-memory, max |dlogit| = {d:.3g}")
        del m2
    except Exception as e:  # noqa: BLE001
        info["reload_error"] = repr(e)[:500]
        log(f"reload check failed: {e!r}"[:500])
    try:
        from transformers import AutoTokenizer
        ht = AutoTokenizer.from_pretrained(a.out)
        ok = ht(held_text[:5000])["input_ids"] == tok.encode(held_text[:5000]).ids
        info["autotokenizer_matches"] = ok
        log(f"AutoTokenizer ({type(ht).__name__}) matches tokenizers on held-out text: {ok}")
    except Exception as e:  # noqa: BLE001
        log(f"AutoTokenizer check failed: {e!r}"[:500])
    if a.det_check_steps > 0:
        try:
            del model
            torch.cuda.empty_cache()
            m3 = build_model(a, vocab, a.seed, eot, eot)
            set_impl(m3, a.attn, impl)
            l2, _ = train(m3, train_ids, windows, a, a.seed, a.det_check_steps)
            n = a.det_check_steps
            same = l2 == losses[:n]
            info["determinism"] = {"steps_compared": n, "bitwise_identical": same,
                                   "first": losses[:5], "rerun_first": l2[:5],
                                   "max_abs_diff": max(abs(x - y) for x, y in zip(l2, losses[:n]))}
            log(f"determinism: first {n} losses identical on a fresh re-run: {same}")
        except Exception as e:  # noqa: BLE001
            info["determinism_error"] = repr(e)[:500]
            log(f"determinism check failed: {e!r}"[:500])
    info["total_seconds"] = time.time() - T0
    info.update(heldout_mean_ce=mean_ce, heldout_ppl=ppl, params=n_params)
    with open(os.path.join(a.out, "train_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    log("done in %.1fs" % info["total_seconds"])


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        sys.exit(1)
