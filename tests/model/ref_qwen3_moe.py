#!/usr/bin/python3
"""Independent float64 reference forward pass for Qwen3-MoE checkpoints.

Purpose: an oracle for moerun's Qwen3-MoE model code (src/model/qwen3_moe_model.cc).
It reads an HF-layout checkpoint directory (config.json plus model.safetensors or
shards through model.safetensors.index.json), runs the token ids as ONE causal
sequence in float64, and writes logits [T, vocab] (F32) to a safetensors file.
The math follows docs/models.md section 6, written from transformers'
modeling_qwen3_moe.py (Qwen3MoeAttention, Qwen3MoeSparseMoeBlock,
Qwen3MoeDecoderLayer, Qwen3MoeRMSNorm, rotate_half / apply_rotary_pos_emb):
  h = embed[ids]
  per layer: h += o_proj(GQA(RMSNorm(h)))       q/k RMSNorm per head, then RoPE
             h += MoE(RMSNorm(h)) or dense MLP  by decoder_sparse_step / mlp_only_layers
  logits = RMSNorm(h) @ lm_head^T               (embed_tokens when tied)
Attention is expanded (repeat the KV heads), with no cache, so it shares nothing
with moerun's cached form. Safetensors I/O and the elementwise helpers (RMSNorm,
SiLU, softmax, SwiGLU MLP) come from ref_deepseek.py; the rest is written here.

Usage:
  ref_qwen3_moe.py MODEL_DIR --tokens 5,17,3,... --output ref.safetensors [--quiet]
  ref_qwen3_moe.py --self-test
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_deepseek import load_checkpoint, mlp, rms_norm, softmax, write_safetensors  # noqa: E402


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


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
    """Qwen3MoeDecoderLayer: not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0."""
    return (l not in (cfg.get("mlp_only_layers") or [])
            and cfg["num_experts"] > 0
            and (l + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def attention(a, positions, W, p, cfg):
    T = a.shape[0]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    eps = cfg.get("rms_norm_eps", 1e-6)
    q = (a @ W[p + "q_proj.weight"].T).reshape(T, nh, hd)
    k = (a @ W[p + "k_proj.weight"].T).reshape(T, nkv, hd)
    v = (a @ W[p + "v_proj.weight"].T).reshape(T, nkv, hd)
    q = rms_norm(q, W[p + "q_norm.weight"], eps)          # per head, over hd
    k = rms_norm(k, W[p + "k_norm.weight"], eps)
    f = inv_freq(hd, cfg.get("rope_theta", 10000.0))
    q, k = apply_rope(q, positions, f), apply_rope(k, positions, f)
    group = nh // nkv
    k = np.repeat(k, group, axis=1)                       # repeat_kv: head h reads KV head h // group
    v = np.repeat(v, group, axis=1)
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
    s = s + np.triu(np.full((T, T), -np.inf), 1)[None]    # causal
    o = np.einsum("hts,shd->thd", softmax(s), v).reshape(T, nh * hd)
    return o @ W[p + "o_proj.weight"].T


def route(logits_row, k, norm):
    """softmax over all experts, top-k (ties: lowest id), renormalise if norm_topk_prob."""
    probs = softmax(logits_row)
    ids = sorted(range(len(probs)), key=lambda e: (-probs[e], e))[:k]
    w = probs[ids]
    if norm:
        w = w / w.sum()
    return ids, w, probs


def moe(x, W, p, cfg, margins):
    E, k = cfg["num_experts"], cfg["num_experts_per_tok"]
    norm = bool(cfg.get("norm_topk_prob", False))
    logits = x @ W[p + "gate.weight"].T                   # [T, E]
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        ids, w, probs = route(logits[t], k, norm)
        srt = np.sort(probs)[::-1]
        margins.append(float(srt[k - 1] - srt[k]) if k < E else float("inf"))
        for e, we in zip(ids, w):
            q = f"{p}experts.{e}."
            out[t] += we * mlp(x[t:t + 1], W[q + "gate_proj.weight"], W[q + "up_proj.weight"],
                               W[q + "down_proj.weight"])[0]
    return out


def forward(cfg, W, tokens, margins=None):
    eps = cfg.get("rms_norm_eps", 1e-6)
    positions = np.arange(len(tokens), dtype=np.float64)
    h = W["model.embed_tokens.weight"][tokens]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = h + attention(rms_norm(h, W[p + "input_layernorm.weight"], eps), positions, W,
                          p + "self_attn.", cfg)
        a = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(cfg, l):
            h = h + moe(a, W, p + "mlp.", cfg, margins.setdefault(l, []) if margins is not None else [])
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
    cfg = {"num_experts": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    check("layer rule", [is_moe_layer(cfg, l) for l in range(6)] == [False, True, False, False, False, True])
    return 1 if fails else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--tokens")
    ap.add_argument("--output")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.model_dir or not args.tokens:
        ap.error("MODEL_DIR and --tokens are required (or use --self-test)")
    tokens = [int(t) for t in args.tokens.split(",") if t]
    cfg, W = load_checkpoint(args.model_dir)
    if cfg.get("model_type") != "qwen3_moe":
        print(f"error: model_type {cfg.get('model_type')!r} is not qwen3_moe", file=sys.stderr)
        return 2
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
