#!/usr/bin/python3
"""Independent float64 reference forward pass for the GQA MoE families.

Purpose: an oracle for moerun's GQA model code (src/model/gqa_model.cc,
gqa_attention.cc) on Qwen3-MoE, Qwen2-MoE, Mixtral and OLMoE checkpoints.
It reads an HF-layout checkpoint directory (config.json plus model.safetensors or
shards through model.safetensors.index.json), runs the token ids as ONE causal
sequence in float64, and writes logits [T, vocab] (F32) to a safetensors file;
--generate N instead prints N greedy ids (argmax, ties to the lowest id) after
the prompt, recomputing the whole sequence each step.
The math follows docs/models.md sections 6-9, written from transformers'
modeling_qwen3_moe.py, modeling_qwen2_moe.py, modeling_mixtral.py and
modeling_olmoe.py (their Attention, SparseMoeBlock, DecoderLayer, RMSNorm,
rotate_half / apply_rotary_pos_emb):
  h = embed[ids]
  per layer: h += o_proj(GQA(RMSNorm(h)))       family switches below
             h += MoE(RMSNorm(h)) or dense MLP  Qwen: decoder_sparse_step / mlp_only_layers
  logits = RMSNorm(h) @ lm_head^T               (embed_tokens when tied)
Family switches (FAMILIES):
  qwen3_moe  q/k RMSNorm per head over head_dim
  qwen2_moe  q/k/v biases (qkv_bias, default true); shared expert times
             sigmoid(x . shared_expert_gate)
  mixtral    MoE under block_sparse_moe., experts w1 (gate) / w3 (up) / w2 (down)
             of width intermediate_size, top-k always renormalised
  olmoe      q/k RMSNorm over the whole projection (q_norm [nh*hd], k_norm
             [nkv*hd]), then clamp q, k, v to [-clip_qkv, clip_qkv] if set
Attention is expanded (repeat the KV heads), with no cache, so it shares nothing
with moerun's cached form. Safetensors I/O and the elementwise helpers (RMSNorm,
SiLU, sigmoid, softmax, SwiGLU MLP) come from ref_deepseek.py; the rest is
written here.

Usage:
  ref_gqa_moe.py MODEL_DIR --tokens 5,17,3,... --output ref.safetensors [--quiet]
  ref_gqa_moe.py MODEL_DIR --tokens 5,17,3 --generate 6
  ref_gqa_moe.py --self-test
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_deepseek import load_checkpoint, mlp, rms_norm, sigmoid, softmax, write_safetensors  # noqa: E402

# What distinguishes the families (transformers' config defaults for absent fields).
FAMILIES = {
    "qwen3_moe": dict(qk_norm="head", block="mlp.", names=("gate_proj", "up_proj", "down_proj"),
                      experts="num_experts", width="moe_intermediate_size", eps=1e-6, theta=10000.0),
    "qwen2_moe": dict(qk_norm=None, block="mlp.", names=("gate_proj", "up_proj", "down_proj"),
                      experts="num_experts", width="moe_intermediate_size", eps=1e-6, theta=10000.0),
    "mixtral": dict(qk_norm=None, block="block_sparse_moe.", names=("w1", "w3", "w2"),
                    experts="num_local_experts", width="intermediate_size", eps=1e-5, theta=1e6),
    "olmoe": dict(qk_norm="whole", block="mlp.", names=("gate_proj", "up_proj", "down_proj"),
                  experts="num_experts", width="intermediate_size", eps=1e-5, theta=10000.0),
}


def family(cfg):
    return FAMILIES[cfg["model_type"]]


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def eps_of(cfg):
    return cfg.get("rms_norm_eps", family(cfg)["eps"])


def inv_freq(dim, theta):
    """Default RoPE: theta^(-2i/dim), i = 0 .. dim/2 - 1."""
    return 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, positions, freqs):
    """x [T, heads, d]; HF: x * cos + rotate_half(x) * sin, cos/sin = cat(freqs, freqs)."""
    ang = np.outer(positions, freqs)                      # [T, d/2]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)[:, None, :]
    return x * cos + rotate_half(x) * sin


def is_moe_layer(cfg, l):
    """Qwen: not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0; Mixtral / OLMoE: all."""
    if cfg["model_type"] in ("mixtral", "olmoe"):
        return True
    return (l not in (cfg.get("mlp_only_layers") or [])
            and cfg["num_experts"] > 0
            and (l + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def qkv(a, W, p, cfg):
    """The projections after the family's biases, norms and clipping: q [T, nh*hd], k, v [T, nkv*hd]."""
    fam, eps = family(cfg), eps_of(cfg)
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    T = a.shape[0]
    q, k, v = (a @ W[p + f"{n}_proj.weight"].T for n in "qkv")
    if cfg["model_type"] == "qwen2_moe" and cfg.get("qkv_bias", True):
        q, k, v = q + W[p + "q_proj.bias"], k + W[p + "k_proj.bias"], v + W[p + "v_proj.bias"]
    if fam["qk_norm"] == "head":                          # Qwen3: per head, over hd
        q = rms_norm(q.reshape(T, nh, hd), W[p + "q_norm.weight"], eps).reshape(T, nh * hd)
        k = rms_norm(k.reshape(T, nkv, hd), W[p + "k_norm.weight"], eps).reshape(T, nkv * hd)
    elif fam["qk_norm"] == "whole":                       # OLMoE: over the whole projection
        q = rms_norm(q, W[p + "q_norm.weight"], eps)
        k = rms_norm(k, W[p + "k_norm.weight"], eps)
    clip = cfg.get("clip_qkv") if cfg["model_type"] == "olmoe" else None
    if clip is not None:
        q, k, v = (np.clip(x, -clip, clip) for x in (q, k, v))
    return q, k, v


def attention(a, positions, W, p, cfg):
    T = a.shape[0]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    q, k, v = qkv(a, W, p, cfg)
    q, k, v = q.reshape(T, nh, hd), k.reshape(T, nkv, hd), v.reshape(T, nkv, hd)
    f = inv_freq(hd, cfg.get("rope_theta", family(cfg)["theta"]))
    q, k = apply_rope(q, positions, f), apply_rope(k, positions, f)
    group = nh // nkv
    k = np.repeat(k, group, axis=1)                       # repeat_kv: head h reads KV head h // group
    v = np.repeat(v, group, axis=1)
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
    s = s + np.triu(np.full((T, T), -np.inf), 1)[None]    # causal
    o = np.einsum("hts,shd->thd", softmax(s), v).reshape(T, nh * hd)
    return o @ W[p + "o_proj.weight"].T


def route(logits_row, k, norm):
    """softmax over all experts, top-k (ties: lowest id), renormalise if norm."""
    probs = softmax(logits_row)
    ids = sorted(range(len(probs)), key=lambda e: (-probs[e], e))[:k]
    w = probs[ids]
    if norm:
        w = w / w.sum()
    return ids, w, probs


def moe(x, W, p, cfg, margins):
    fam = family(cfg)
    E, k = cfg[fam["experts"]], cfg["num_experts_per_tok"]
    norm = True if cfg["model_type"] == "mixtral" else bool(cfg.get("norm_topk_prob", False))
    g, u, d = fam["names"]
    logits = x @ W[p + "gate.weight"].T                   # [T, E]
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        ids, w, probs = route(logits[t], k, norm)
        srt = np.sort(probs)[::-1]
        margins.append(float(srt[k - 1] - srt[k]) if k < E else float("inf"))
        for e, we in zip(ids, w):
            q = f"{p}experts.{e}."
            out[t] += we * mlp(x[t:t + 1], W[q + g + ".weight"], W[q + u + ".weight"], W[q + d + ".weight"])[0]
    if cfg["model_type"] == "qwen2_moe" and cfg.get("shared_expert_intermediate_size", 0) > 0:
        s = p + "shared_expert."
        gate = sigmoid(x @ W[p + "shared_expert_gate.weight"].T)          # [T, 1]
        out += gate * mlp(x, W[s + "gate_proj.weight"], W[s + "up_proj.weight"], W[s + "down_proj.weight"])
    return out


def forward(cfg, W, tokens, margins=None):
    eps = eps_of(cfg)
    positions = np.arange(len(tokens), dtype=np.float64)
    h = W["model.embed_tokens.weight"][tokens]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = h + attention(rms_norm(h, W[p + "input_layernorm.weight"], eps), positions, W,
                          p + "self_attn.", cfg)
        a = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(cfg, l):
            h = h + moe(a, W, p + family(cfg)["block"], cfg,
                        margins.setdefault(l, []) if margins is not None else [])
        else:
            h = h + mlp(a, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                        W[p + "mlp.down_proj.weight"])
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return rms_norm(h, W["model.norm.weight"], eps) @ head.T


def self_test():
    fails = 0

    def check(name, ok):
        nonlocal fails
        print(("ok   " if ok else "FAIL ") + name)
        fails += not ok

    # rotate-half RoPE == complex rotation of (x[i], x[i + d/2]) by pos * inv_freq[i].
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8))
    f = inv_freq(8, 10000.0)
    pos = np.array([0.0, 1.0, 7.0])
    z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * np.outer(pos, f))[:, None, :]
    check("rope = complex rotation of half pairs",
          np.allclose(apply_rope(x, pos, f), np.concatenate([z.real, z.imag], -1)))
    check("rope position 0 is identity", np.allclose(apply_rope(x, np.zeros(3), f), x))
    # RoPE keeps dot products relative: q(p+s).k(s) is the same for every shift s.
    qv, kv = x[:1, :1], x[1:2, :1]
    d = [float(np.sum(apply_rope(qv, np.array([5.0 + s]), f) * apply_rope(kv, np.array([s]), f)))
         for s in (0.0, 3.0, 11.0)]
    check("rope scores depend on relative position only", np.allclose(d, d[0]))
    ids, w, _ = route(np.array([0.1, 2.0, 2.0, -1.0]), 2, True)
    check("router top-k ties to lowest id, renormalised", ids == [1, 2] and np.allclose(w, [0.5, 0.5]))
    _, w, probs = route(np.array([0.1, 2.0, 1.0, -1.0]), 2, False)
    check("router without norm keeps softmax probabilities", np.allclose(w, np.sort(probs)[::-1][:2]))
    cfg = {"model_type": "qwen3_moe", "num_experts": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    check("qwen layer rule", [is_moe_layer(cfg, l) for l in range(6)] == [False, True, False, False, False, True])
    check("mixtral / olmoe: every layer MoE",
          all(is_moe_layer({"model_type": t}, l) for t in ("mixtral", "olmoe") for l in range(4)))
    # The q/k norms: per head (Qwen3) and over the whole projection (OLMoE) differ unless every
    # head has the same RMS; OLMoE's clip_qkv clamps after the norm.
    H, nh, nkv, hd = 8, 2, 1, 4
    Wt = {"p.q_proj.weight": rng.standard_normal((nh * hd, H)), "p.k_proj.weight": rng.standard_normal((nkv * hd, H)),
          "p.v_proj.weight": rng.standard_normal((nkv * hd, H)) * 3}
    a = rng.standard_normal((3, H))
    base = {"hidden_size": H, "num_attention_heads": nh, "num_key_value_heads": nkv, "head_dim": hd}
    q_head, _, _ = qkv(a, dict(Wt, **{"p.q_norm.weight": np.ones(hd), "p.k_norm.weight": np.ones(hd)}), "p.",
                       dict(base, model_type="qwen3_moe"))
    whole_w = dict(Wt, **{"p.q_norm.weight": np.ones(nh * hd), "p.k_norm.weight": np.ones(nkv * hd)})
    q_whole, _, _ = qkv(a, whole_w, "p.", dict(base, model_type="olmoe"))
    check("per-head q norm: every head has RMS 1", np.allclose(np.sqrt((q_head.reshape(3, nh, hd) ** 2).mean(-1)), 1, atol=1e-5))
    check("whole q norm: the projection has RMS 1, heads differ",
          np.allclose(np.sqrt((q_whole ** 2).mean(-1)), 1, atol=1e-5) and not np.allclose(q_whole, q_head))
    _, _, v_clip = qkv(a, whole_w, "p.", dict(base, model_type="olmoe", clip_qkv=0.5))
    check("olmoe clip_qkv clamps v", np.max(np.abs(v_clip)) <= 0.5 and np.max(np.abs(a @ Wt["p.v_proj.weight"].T)) > 0.5)
    return 1 if fails else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--tokens")
    ap.add_argument("--output")
    ap.add_argument("--generate", type=int, default=0, metavar="N", help="print N greedy ids after the tokens")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.model_dir or not args.tokens:
        ap.error("MODEL_DIR and --tokens are required (or use --self-test)")
    tokens = [int(t) for t in args.tokens.split(",") if t]
    cfg, W = load_checkpoint(args.model_dir)
    if cfg.get("model_type") not in FAMILIES:
        print(f"error: model_type {cfg.get('model_type')!r} is not one of {sorted(FAMILIES)}", file=sys.stderr)
        return 2
    if args.generate:
        seq = list(tokens)
        for _ in range(args.generate):
            seq.append(int(np.argmax(forward(cfg, W, seq)[-1])))
        print(",".join(map(str, seq[len(tokens):])))
        return 0
    margins = {}
    logits = forward(cfg, W, tokens, margins)
    if not args.quiet:
        for l, m in sorted(margins.items()):
            print(f"router layer {l}: min top-k selection margin {min(m):.3e}", file=sys.stderr)
    if not np.all(np.isfinite(logits)):
        print("error: non-finite logits", file=sys.stderr)
        return 1
    if args.output:
        write_safetensors(args.output, {"logits": logits},
                          {"format": "pt", "tokens": ",".join(map(str, tokens))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
