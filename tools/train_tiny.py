#!/usr/bin/python3
"""Train a tiny DeepSeek-V2 (V2-Lite layout) model on text arithmetic and export it.

Purpose: moerun's embedded default model. It is small (about 1M parameters), it is
trained, so greedy decoding gives checkable answers, and it has the exact
DeepSeek-V2-Lite architecture of docs/models.md §3:
  RMSNorm (3.2); MLA attention with a plain q_proj (no q_lora), kv_a_proj_with_mqa
  split into c_kv (through kv_a_layernorm) and one shared k_pe, kv_b_proj (3.3);
  RoPE on the rope lanes only, rotating adjacent pairs (2i, 2i+1) (3.5), with the
  DeepSeek YaRN inv_freq and cos/sin mscale (3.6) and the mscale_all_dim softmax
  scale (3.7); a dense first layer (first_k_dense_replace = 1), then MoE layers with
  a greedy softmax router in fp32, norm_topk_prob false, routed_scaling_factor 1.0
  (3.8), SwiGLU experts and one shared MLP of width n_shared * moe_intermediate (3.9);
  final norm and an untied lm_head (3.10).
The torch modules below are written from that description. They use the HF parameter names,
so the state dict is the checkpoint's tensor table (docs/models.md §2.1).

Task: "A+B=", "A-B=" (operands 0..999; a negative result is written with a leading
'-') and "A*B=" (A 0..99, B 0..9). The answer is the plain decimal result, most
significant digit first, followed by EOS. A training sequence is
  BOS, prompt bytes, answer bytes, EOS
with the loss on the answer bytes and EOS only. This is exactly what
`moerun generate -m DIR -p "123+456=" --temp 0` sees (tokenizer_config.json sets
add_bos_token) and prints (the text up to EOS).

Tokenizer: a byte-level BPE with no merges. Ids 0..255 are the 256 GPT-2 byte-level
symbols (id = byte value), 256 = BOS "<｜begin▁of▁sentence｜>", 257 = EOS
"<｜end▁of▁sentence｜>"; config vocab_size pads the embedding to 264 rows.

Usage:
  train_tiny.py [--out DIR] [--seed S] [--time-limit SEC] [--steps N] ...
      Train and write DIR/{config.json, model.safetensors, tokenizer.json,
      tokenizer_config.json, heldout.jsonl}. Progress (loss, validation accuracy) goes
      to stderr every --eval-every steps. Training stops after --steps or when
      --time-limit seconds of wall time have passed, whichever comes first.
  train_tiny.py --verify DIR [--ref tests/model/ref_deepseek.py] [--moerun BIN]
      Load DIR into the torch model and compare its logits (float64 and float32) with
      the float64 numpy reference and, if --moerun is given, with `moerun logits`, on a
      few token sequences; then measure greedy exact-match accuracy on DIR/heldout.jsonl.
  train_tiny.py --eval DIR
      Only the held-out accuracy of the checkpoint in DIR (torch greedy decoding).

Determinism: the data (held-out set, validation set, training batches) and the
initial weights depend only on --seed (numpy default_rng(seed), torch.manual_seed).
Torch CPU training with 2 threads is not guaranteed to be bitwise reproducible
(reduction order in multithreaded kernels), so a rerun gives a close, not an
identical, checkpoint. The step schedule (warmup, cosine decay over --steps) is fixed
by the arguments, not by wall time; only the --time-limit safety stop depends on time.

Speed: Debian's torch links the reference netlib BLAS, so f32 matmuls are slow (about
2.5 s per step here). Training therefore runs the forward/backward under bf16 autocast
(oneDNN, about 0.2-0.3 s per step with batch 256); the router matmul stays f32, the
master weights and optimizer state are f32, and the checkpoint is written in f32.
Accuracy is measured in f32 without autocast, like the engine's f32 path. With other
CPU-heavy processes on the machine, --threads 1 can be much faster than 2 (OpenMP
barriers stall when a thread is descheduled).

Only the Python standard library, numpy and torch are used; the safetensors writer
and reader are plain Python (docs/models.md §2.2).
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
BOS_ID = 256
EOS_ID = 257
VOCAB_SIZE = 264  # 258 tokenizer ids, padded

# DeepSeek-V2-Lite-Chat chat template (docs/models.md §4), verbatim.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def make_config(args):
    """HF DeepSeek-V2 config.json (field set of docs/models.md §1.1) for the tiny model."""
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "moe_intermediate_size": args.moe_intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.heads,
        "n_routed_experts": args.experts,
        "n_shared_experts": args.shared,
        "num_experts_per_tok": args.topk,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "kv_lora_rank": args.kv_lora,
        "q_lora_rank": None,
        "qk_nope_head_dim": args.nope,
        "qk_rope_head_dim": args.rope,
        "v_head_dim": args.vdim,
        "hidden_act": "silu",
        # YaRN with factor 4 over an original 256-position window. For rope dim 16,
        # base 10000: corr_dim(32) = 0.21 -> low = 0, corr_dim(1) = 3.22 -> high = 4,
        # so lane pair 0 keeps its frequency, 1..3 blend and 4..7 are divided by 4.
        "max_position_embeddings": 1024,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 256,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 0.707,
            "mscale_all_dim": 0.707,
        },
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "scoring_func": "softmax",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "aux_loss_alpha": args.aux_alpha,
        "seq_aux": False,
        "rms_norm_eps": 1e-06,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "ep_size": 1,
    }


# ---------------------------------------------------------------------------
# Tokenizer files
# ---------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2 byte-level alphabet: byte value -> printable unicode character."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}  # id = byte value

    def added(i, content):
        return {"id": i, "content": content, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False, "special": True}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(BOS_ID, BOS_TOKEN), added(EOS_ID, EOS_TOKEN)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }


def tokenizer_config_json():
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 1024,
        "pad_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def encode(text):
    """What the tokenizer does for ASCII text: one id per byte."""
    return list(text.encode("ascii"))


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

OPS = ("+", "-", "*")
OP_PROBS = (0.4, 0.4, 0.2)


def rand_operand(rng, max_digits):
    """Number of digits uniform in 1..max_digits, then uniform with that many digits."""
    d = int(rng.integers(1, max_digits + 1))
    lo = 0 if d == 1 else 10 ** (d - 1)
    return int(rng.integers(lo, 10 ** d))


def rand_problem(rng):
    op = OPS[int(rng.choice(3, p=OP_PROBS))]
    if op == "*":
        a, b = rand_operand(rng, 2), rand_operand(rng, 1)
    else:
        a, b = rand_operand(rng, 3), rand_operand(rng, 3)
    return problem(a, op, b)


def problem(a, op, b):
    r = a + b if op == "+" else a - b if op == "-" else a * b
    return f"{a}{op}{b}=", str(r)


def make_eval_sets(rng, n_heldout, n_val):
    """Disjoint held-out and validation problems (never trained on)."""
    seen = set()
    sets = []
    for n in (n_heldout, n_val):
        out = []
        while len(out) < n:
            p, a = rand_problem(rng)
            if p in seen:
                continue
            seen.add(p)
            out.append((p, a))
        sets.append(out)
    return sets[0], sets[1], seen


def make_batch(rng, batch, excluded):
    """Token ids [B, T] (padded with EOS), loss mask [B, T] on answer + EOS targets."""
    seqs, starts = [], []
    while len(seqs) < batch:
        p, a = rand_problem(rng)
        if p in excluded:
            continue
        ids = [BOS_ID] + encode(p) + encode(a) + [EOS_ID]
        seqs.append(ids)
        starts.append(1 + len(p))  # index of the first answer token
    T = max(len(s) for s in seqs)
    x = np.full((batch, T), EOS_ID, dtype=np.int64)
    m = np.zeros((batch, T), dtype=np.float32)
    for i, (s, st) in enumerate(zip(seqs, starts)):
        x[i, :len(s)] = s
        m[i, st:len(s)] = 1.0  # targets at positions st..len-1 (predicted from st-1..len-2)
    return torch.from_numpy(x), torch.from_numpy(m)


# ---------------------------------------------------------------------------
# Model (docs/models.md §3)
# ---------------------------------------------------------------------------

def get_mscale(s, m):
    """docs/models.md §3.6 yarn_get_mscale."""
    return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0


def rope_setup(cfg):
    """(inv_freq [dr/2] float64, cos/sin factor, softmax scale): docs/models.md §3.6, §3.7."""
    dr = cfg["qk_rope_head_dim"]
    base = float(cfg["rope_theta"])
    scale = (cfg["qk_nope_head_dim"] + dr) ** -0.5
    rs = cfg.get("rope_scaling")
    i = np.arange(dr // 2, dtype=np.float64)
    pos_freqs = base ** (2.0 * i / dr)
    if rs is None:
        return 1.0 / pos_freqs, 1.0, scale
    s = float(rs["factor"])
    L0 = float(rs["original_max_position_embeddings"])
    freq_extra = 1.0 / pos_freqs
    freq_inter = 1.0 / (s * pos_freqs)

    def corr_dim(r):
        return dr * math.log(L0 / (r * 2.0 * math.pi)) / (2.0 * math.log(base))

    low = max(math.floor(corr_dim(float(rs["beta_fast"]))), 0)
    high = min(math.ceil(corr_dim(float(rs["beta_slow"]))), dr - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((i - low) / (high - low), 0.0, 1.0)
    mask = 1.0 - ramp
    inv_freq = freq_inter * (1.0 - mask) + freq_extra * mask
    m_rope = get_mscale(s, float(rs["mscale"])) / get_mscale(s, float(rs["mscale_all_dim"]))
    if float(rs.get("mscale_all_dim", 0.0)):
        scale *= get_mscale(s, float(rs["mscale_all_dim"])) ** 2
    return inv_freq, m_rope, scale


class RMSNorm(nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        x32 = x.float() if x.dtype != torch.float64 else x
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def rope_adjacent(x, cos, sin):
    """Rotate pairs (x[2i], x[2i+1]) by the angle of lane i; output stays interleaved.

    x [..., T, (heads,) dr]; cos/sin broadcastable to x[..., 0::2].
    """
    xe, xo = x[..., 0::2], x[..., 1::2]
    return torch.stack((xe * cos - xo * sin, xo * cos + xe * sin), dim=-1).flatten(-2)


class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        self.nh = nh
        self.dn, self.dr, self.dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.r_kv = cfg["kv_lora_rank"]
        self.q_proj = nn.Linear(H, nh * (self.dn + self.dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(H, self.r_kv + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.r_kv, 1e-6)  # default eps, as in the remote code
        self.kv_b_proj = nn.Linear(self.r_kv, nh * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(nh * self.dv, H, bias=False)

    def forward(self, a, cos, sin, scale, mask):
        B, T, _ = a.shape
        q = self.q_proj(a).view(B, T, self.nh, self.dn + self.dr)
        q_nope, q_pe = q[..., :self.dn], q[..., self.dn:]
        ckv = self.kv_a_proj_with_mqa(a)
        c_kv, k_pe = ckv[..., :self.r_kv], ckv[..., self.r_kv:]          # k_pe: one per token
        c_kv = self.kv_a_layernorm(c_kv)
        kv = self.kv_b_proj(c_kv).view(B, T, self.nh, self.dn + self.dv)
        k_nope, v = kv[..., :self.dn], kv[..., self.dn:]
        q_pe = rope_adjacent(q_pe, cos[:, None, :], sin[:, None, :])     # [B,T,nh,dr]
        k_pe = rope_adjacent(k_pe, cos, sin)                             # [B,T,dr]
        s = (torch.einsum("bthd,bshd->bhts", q_nope, k_nope)
             + torch.einsum("bthd,bsd->bhts", q_pe, k_pe)) * scale + mask
        p = torch.softmax(s.float() if s.dtype != torch.float64 else s, dim=-1).to(v.dtype)
        o = torch.einsum("bhts,bshd->bthd", p, v).reshape(B, T, self.nh * self.dv)
        return self.o_proj(o)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H = cfg["hidden_size"]
        self.E, self.k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        self.rsf = float(cfg["routed_scaling_factor"])
        assert cfg["topk_method"] == "greedy" and cfg["scoring_func"] == "softmax"
        assert not cfg["norm_topk_prob"]
        self.gate = nn.Linear(H, self.E, bias=False)  # mlp.gate.weight [E, H]
        self.experts = nn.ModuleList(MLP(H, cfg["moe_intermediate_size"]) for _ in range(self.E))
        self.shared_experts = MLP(H, cfg["n_shared_experts"] * cfg["moe_intermediate_size"])
        self.aux_loss = None

    def forward(self, x):
        shape = x.shape
        xf = x.reshape(-1, shape[-1])
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast("cpu", enabled=False):                          # router in fp32
            logits = xf.to(cdt) @ self.gate.weight.to(cdt).t()
        scores = torch.softmax(logits, dim=-1)
        w, idx = torch.topk(scores, self.k, dim=-1)
        w = w * self.rsf                                                   # no renormalisation
        out = torch.zeros_like(xf)
        for e in range(self.E):
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            y = self.experts[e](xf[tok])
            out.index_add_(0, tok, (y.to(cdt) * w[tok, slot, None]).to(xf.dtype))
        if self.training:
            # Switch-style balance loss: E * sum_e (fraction of picks to e) * (mean score of e).
            frac = torch.zeros(self.E, dtype=cdt).index_add_(
                0, idx.reshape(-1), torch.ones(idx.numel(), dtype=cdt)) / idx.numel()
            self.aux_loss = self.E * (frac * scores.mean(0)).sum()
        return (out + self.shared_experts(xf)).view(shape)


class DecoderLayer(nn.Module):
    def __init__(self, cfg, l):
        super().__init__()
        H, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = MLA(cfg)
        self.post_attention_layernorm = RMSNorm(H, eps)
        moe = (cfg["n_routed_experts"] is not None and l >= cfg["first_k_dense_replace"]
               and l % cfg["moe_layer_freq"] == 0)
        self.mlp = MoE(cfg) if moe else MLP(H, cfg["intermediate_size"])

    def forward(self, h, cos, sin, scale, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, scale, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(cfg, l) for l in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class DeepseekV2Tiny(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        inv_freq, self.m_rope, self.scale = rope_setup(cfg)
        self.register_buffer("inv_freq", torch.from_numpy(inv_freq), persistent=False)
        std = cfg["initializer_range"]
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, mean=0.0, std=std)

    def forward(self, ids):
        B, T = ids.shape
        dt = self.lm_head.weight.dtype
        pos = torch.arange(T, dtype=torch.float64)
        theta = pos[:, None] * self.inv_freq[None, :]                     # [T, dr/2]
        cos = (torch.cos(theta) * self.m_rope).to(dt)
        sin = (torch.sin(theta) * self.m_rope).to(dt)
        mask = torch.full((T, T), float("-inf"), dtype=dt).triu(1)
        h = self.model.embed_tokens(ids)                                  # no scaling
        for layer in self.model.layers:
            h = layer(h, cos, sin, self.scale, mask)
        return self.lm_head(self.model.norm(h))

    def aux_loss(self):
        terms = [m.aux_loss for m in self.modules() if isinstance(m, MoE) and m.aux_loss is not None]
        return sum(terms) / len(terms) if terms else torch.zeros(())


# ---------------------------------------------------------------------------
# Greedy decoding and accuracy
# ---------------------------------------------------------------------------

@torch.no_grad()
def greedy_answers(model, prompts, max_new=6, batch=512, amp=False):
    """Greedy continuation of BOS + prompt until EOS (or max_new tokens); returns text or None."""
    was_training = model.training
    model.eval()
    out = [None] * len(prompts)
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for _, idxs in sorted(by_len.items()):
        for s in range(0, len(idxs), batch):
            chunk = idxs[s:s + batch]
            ids = torch.tensor([[BOS_ID] + encode(prompts[i]) for i in chunk], dtype=torch.int64)
            done = torch.zeros(len(chunk), dtype=torch.bool)
            gen = [[] for _ in chunk]
            for _ in range(max_new + 1):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    nxt = model(ids)[:, -1].argmax(-1)
                for j in range(len(chunk)):
                    if not done[j]:
                        if int(nxt[j]) == EOS_ID:
                            done[j] = True
                        else:
                            gen[j].append(int(nxt[j]))
                if bool(done.all()):
                    break
                ids = torch.cat([ids, nxt[:, None]], dim=1)
            for j, i in enumerate(chunk):
                if done[j]:
                    out[i] = bytes(t for t in gen[j] if t < 256).decode("latin-1") \
                        if all(t < 256 for t in gen[j]) else None
    model.train(was_training)
    return out


def accuracy(model, problems, amp=False):
    got = greedy_answers(model, [p for p, _ in problems], amp=amp)
    ok = [g == a for g, (_, a) in zip(got, problems)]
    per_op = {}
    for (p, _), o in zip(problems, ok):
        op = next(c for c in p[1:] if c in "+-*")
        n, c = per_op.get(op, (0, 0))
        per_op[op] = (n + 1, c + int(o))
    return sum(ok) / len(ok), per_op, got


# ---------------------------------------------------------------------------
# safetensors I/O (docs/models.md §2.2)
# ---------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, float32/float64 numpy array, 'F32'|'BF16')."""
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs, off = [], 0
    for name, arr, dt in tensors:
        a = np.ascontiguousarray(arr, dtype=np.float32)
        if dt == "F32":
            data = a.astype("<f4").tobytes()
        elif dt == "BF16":
            u = a.view(np.uint32).astype(np.uint64)
            lsb = (u >> np.uint64(16)) & np.uint64(1)
            data = ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)).astype("<u2").tobytes()
        else:
            raise ValueError(dt)
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


def read_safetensors(path):
    """{name: float64 numpy array} for F32 / BF16 / F64 tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b:base + e]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif dt == "F64":
            a = np.frombuffer(buf, dtype="<f8").copy()
        elif dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            a = a.astype(np.float64)
        else:
            raise ValueError(f"{path}: {name}: dtype {dt}")
        out[name] = a.reshape(info["shape"])
    return out


def export(model, cfg, out_dir, dtype):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    tensors = [(k, v.detach().cpu().numpy(), dtype) for k, v in model.state_dict().items()]
    nbytes = write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config_json(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    return nbytes


def load_model(model_dir, dtype=torch.float32):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = DeepseekV2Tiny(cfg)
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    sd = {k: torch.from_numpy(v) for k, v in w.items()}
    model.load_state_dict(sd, strict=True)
    return model.to(dtype).eval(), cfg


def load_problems(path):
    with open(path) as f:
        return [(d["prompt"], d["answer"]) for d in map(json.loads, f) if d]


# ---------------------------------------------------------------------------
# Verification against the reference and the engine
# ---------------------------------------------------------------------------

def verify(args):
    model64, cfg = load_model(args.verify, torch.float64)
    model32, _ = load_model(args.verify, torch.float32)
    heldout = load_problems(os.path.join(args.verify, "heldout.jsonl"))
    seqs = []
    for p, a in heldout[:3]:
        seqs.append([BOS_ID] + encode(p) + encode(a) + [EOS_ID])
    rng = np.random.default_rng(1)
    # A long mixed sequence exercises positions up to ~40 (several problems back to back).
    long = [BOS_ID]
    for p, a in heldout[3:7]:
        long += encode(p) + encode(a) + [EOS_ID]
    seqs.append(long)
    seqs.append([BOS_ID] + [int(t) for t in rng.integers(32, 127, size=24)])
    worst = {"torch64": 0.0, "torch32": 0.0, "moerun": 0.0}
    with tempfile.TemporaryDirectory() as td:
        for n, toks in enumerate(seqs):
            tstr = ",".join(map(str, toks))
            ref_path = os.path.join(td, f"ref{n}.safetensors")
            subprocess.run([sys.executable, args.ref, args.verify, "--tokens", tstr,
                            "--output", ref_path, "--quiet"], check=True)
            ref = read_safetensors(ref_path)["logits"]
            ids = torch.tensor([toks], dtype=torch.int64)
            with torch.no_grad():
                l64 = model64(ids)[0].numpy()
                l32 = model32(ids)[0].double().numpy()
            d64 = float(np.abs(l64 - ref).max())
            d32 = float(np.abs(l32 - ref).max())
            worst["torch64"] = max(worst["torch64"], d64)
            worst["torch32"] = max(worst["torch32"], d32)
            line = (f"seq {n} (T={len(toks)}): max|logit| {np.abs(ref).max():.2f}, "
                    f"torch f64 vs ref {d64:.3e}, torch f32 vs ref {d32:.3e}")
            if args.moerun:
                mr_path = os.path.join(td, f"mr{n}.safetensors")
                subprocess.run([args.moerun, "logits", "-m", args.verify, "--tokens", tstr, "-o", mr_path,
                                "--precision", "f32", "-t", "2"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                mr = read_safetensors(mr_path)["logits"]
                dm = float(np.abs(mr - ref).max())
                worst["moerun"] = max(worst["moerun"], dm)
                line += f", moerun f32 vs ref {dm:.3e}"
                if not np.array_equal(mr.argmax(-1), ref.argmax(-1)):
                    line += " (ARGMAX DIFFERS)"
            print(line, file=sys.stderr)
    print("worst: " + ", ".join(f"{k} {v:.3e}" for k, v in worst.items()), file=sys.stderr)
    acc, per_op, _ = accuracy(model32, heldout)
    print(f"held-out greedy exact match (torch f32): {acc:.4f} on {len(heldout)} problems; "
          + ", ".join(f"'{op}' {c}/{n}" for op, (n, c) in sorted(per_op.items())), file=sys.stderr)
    ok = worst["torch64"] < 1e-6 and worst["torch32"] < 1e-3 and (
        not args.moerun or worst["moerun"] < 1e-3)
    return 0 if ok else 1


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = make_config(args)
    heldout, val, excluded = make_eval_sets(rng, args.heldout, args.val)
    model = DeepseekV2Tiny(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}, config: hidden {args.hidden}, layers {args.layers}, experts "
          f"{args.experts} top-{args.topk}, shared {args.shared}x{args.moe_intermediate}",
          file=sys.stderr)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    t0 = time.time()
    model.train()
    ema = None
    step = 0
    stopped = "steps"
    for step in range(args.steps):
        if time.time() - t0 > args.time_limit:
            stopped = "time limit"
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, m = make_batch(rng, args.batch, excluded)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
            logits = model(x[:, :-1])
        logits = logits.float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        loss = (ce * m[:, 1:].reshape(-1)).sum() / m[:, 1:].sum()
        total = loss + args.aux_alpha * model.aux_loss()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = float(loss) if ema is None else 0.98 * ema + 0.02 * float(loss)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc, per_op, _ = accuracy(model, val, amp=args.amp)
            print(f"step {step + 1:6d}  {time.time() - t0:7.1f}s  lr {lr_at(step):.2e}  loss {ema:.4f}  "
                  f"aux {float(model.aux_loss()):.3f}  val acc {acc:.3f} ("
                  + ", ".join(f"'{op}' {c / n:.2f}" for op, (n, c) in sorted(per_op.items())) + ")",
                  file=sys.stderr, flush=True)
    else:
        step = args.steps
    elapsed = time.time() - t0
    print(f"stopped ({stopped}) after {step} steps, {elapsed:.1f}s", file=sys.stderr)

    model.eval()
    nbytes = export(model, cfg, args.out, args.dtype)
    with open(os.path.join(args.out, "heldout.jsonl"), "w") as f:
        for p, a in heldout:
            f.write(json.dumps({"prompt": p, "answer": a}) + "\n")
    # Accuracy of the exported weights (re-read, so a bf16 export is measured as stored).
    reloaded, _ = load_model(args.out, torch.float32)
    acc, per_op, _ = accuracy(reloaded, heldout)
    print(f"wrote {args.out} ({nbytes} tensor bytes, {args.dtype})", file=sys.stderr)
    print(f"held-out greedy exact match: {acc:.4f} on {len(heldout)} problems; "
          + ", ".join(f"'{op}' {c}/{n}" for op, (n, c) in sorted(per_op.items())), file=sys.stderr)
    print(json.dumps({"seed": args.seed, "steps": step, "seconds": round(elapsed, 1),
                      "final_loss_ema": ema, "heldout_acc": acc, "params": n_params}))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "models", "tiny-arith"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=3600)
    ap.add_argument("--time-limit", type=float, default=20 * 60, help="seconds of training wall time")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--aux-alpha", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-amp", dest="amp", action="store_false",
                    help="train in plain f32 (default: bf16 autocast for the matmuls; Debian's torch "
                         "uses the reference netlib BLAS for f32, about 10x slower than oneDNN bf16)")
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--heldout", type=int, default=600)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--dtype", default="F32", choices=["F32", "BF16"])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-lora", type=int, default=64)
    ap.add_argument("--nope", type=int, default=32)
    ap.add_argument("--rope", type=int, default=16)
    ap.add_argument("--vdim", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--moe-intermediate", type=int, default=64)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--shared", type=int, default=2)
    ap.add_argument("--verify", metavar="DIR", help="compare DIR's logits with the reference")
    ap.add_argument("--eval", metavar="DIR", help="held-out accuracy of DIR")
    ap.add_argument("--ref", default=os.path.join(here, "..", "tests", "model", "ref_deepseek.py"))
    ap.add_argument("--moerun", default=None, help="moerun binary to compare too (verify mode)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.verify:
        return verify(args)
    if args.eval:
        model, _ = load_model(args.eval)
        acc, per_op, _ = accuracy(model, load_problems(os.path.join(args.eval, "heldout.jsonl")))
        print(f"held-out greedy exact match: {acc:.4f}; "
              + ", ".join(f"'{op}' {c}/{n}" for op, (n, c) in sorted(per_op.items())))
        return 0
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
