#!/usr/bin/python3
"""Independent float64 reference forward pass for DeepSeek-V2 / V3 checkpoints.

Purpose: an oracle for moerun's DeepSeek-V2 model code. It reads an HF-layout
checkpoint directory (config.json plus model.safetensors, or shards resolved
through model.safetensors.index.json), runs every token id as ONE causal
sequence, and writes the logits to a safetensors file. All math is float64 and
follows docs/models.md section 3 (in the expanded form of 3.3, not the absorbed 3.4):
  3.1 skeleton   3.2 RMSNorm   3.3 MLA   3.5 RoPE (adjacent pairs)
  3.6 YaRN inv_freq and cos/sin mscale   3.7 softmax scale   3.8 router
  3.9 experts / shared experts / dense MLP   3.10 final norm + lm_head
Only the Python standard library and numpy are used (no torch).

FP8 checkpoints (DeepSeek-V3 as released, docs/models.md §2.3): an F8_E4M3
tensor X is decoded from its bit fields (e4m3fn: bias 7, subnormals, 0x7F/0xFF
NaN) and multiplied by "X_scale_inv" per weight_block_size block (config.json
quantization_config, default [128, 128]; edge blocks partial) in float32, one
multiply per element, as DeepSeek's weight_dequant does; the scale tensors are
then dropped and the forward pass sees ordinary weights.

Usage:
  ref_deepseek.py MODEL_DIR --tokens 5,17,3,... --output ref.safetensors
                  [--positions-start P] [--prefix-check] [--dump-hidden] [--quiet]
                  [--min-router-margin X]
  ref_deepseek.py --self-test

Output tensors:
  logits            [T, vocab] F32 (computed in float64, cast at the end)
  hidden.L          [T, H] F32, the residual stream after layer L (--dump-hidden only)
  embeddings        [T, H] F32 (--dump-hidden only)
  final_norm        [T, H] F32, model.norm output (--dump-hidden only)
The __metadata__ records the tokens, the start position, the model dir and
router_min_margin (smallest top-k selection margin over all MoE layers/tokens).

--positions-start P gives the tokens RoPE positions P..P+T-1 (the causal mask
is still over the T tokens only).
--prefix-check re-runs every prefix tokens[:t] and checks that its logits equal
rows [0,t) of the full run (causality / no look-ahead); exit status 1 if not.
A router summary (smallest top-k selection margin per MoE layer) goes to stderr
unless --quiet; a tiny margin means a low-precision engine may legitimately
pick a different expert for that token. --min-router-margin X makes the run
exit with status 3 (after writing the output) when any margin is below X, so a
test can reject token sequences that sit on a routing knife-edge. Margins are in
selection-score units: softmax probabilities (V2) or sigmoid + bias (V3).
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

# ---------------------------------------------------------------------------
# safetensors I/O (docs/models.md §2.2)
# ---------------------------------------------------------------------------

_ST_DTYPES = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
              "F8_E4M3": ("u1", 1)}


def decode_e4m3(codes):
    """uint8 float8_e4m3fn codes -> float64: (-1)^s 2^(e-7) (1 + m/8), e = 0: 2^-6 m/8; S.1111.111 NaN."""
    c = codes.astype(np.int64)
    s, e, m = c >> 7, (c >> 3) & 15, c & 7
    mag = np.where(e == 0, np.ldexp(m / 8.0, -6), np.ldexp(1.0 + m / 8.0, e - 7))
    return np.where((e == 15) & (m == 7), np.nan, np.where(s == 1, -mag, mag))


def read_safetensors(path, dtypes=None):
    """Return {name: float64 ndarray} for every tensor in one .safetensors file (F8_E4M3: the
    unscaled values). If `dtypes` is a dict, it receives {name: safetensors dtype}."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} past end of file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    buf_len = len(raw) - base
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {dt}")
        np_dt, size = _ST_DTYPES[dt]
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        numel = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= buf_len) or end - begin != numel * size:
            raise ValueError(f"{path}: {name}: bad data_offsets {begin},{end} for {dt}{list(shape)}")
        a = np.frombuffer(raw, dtype=np_dt, count=numel, offset=base + begin)
        if dt == "BF16":
            # bf16 is the upper half of an IEEE float32
            a = (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        if dt == "F8_E4M3":
            a = decode_e4m3(a)
        out[name] = a.astype(np.float64).reshape(shape)
        if dtypes is not None:
            dtypes[name] = dt
    return out


def apply_fp8_scales(cfg, weights, dtypes):
    """Replace every F8_E4M3 weight X by X * X_scale_inv per block (float32 product); drop the scales."""
    q = cfg.get("quantization_config") or {}
    bm, bn = q.get("weight_block_size", [128, 128])
    for name in [n for n in weights if n.endswith("_scale_inv")]:
        wname = name[:-len("_scale_inv")]
        if dtypes.get(wname) != "F8_E4M3":
            raise ValueError(f"{name}: its weight {wname} is {dtypes.get(wname)}, not F8_E4M3")
        w, s = weights[wname], weights.pop(name)
        rows, cols = w.shape
        if s.shape != (-(-rows // bm), -(-cols // bn)):
            raise ValueError(f"{name}: shape {s.shape} does not tile {wname} {w.shape} in {bm}x{bn} blocks")
        per_elem = np.repeat(np.repeat(s.astype(np.float32), bm, axis=0), bn, axis=1)[:rows, :cols]
        weights[wname] = (w.astype(np.float32) * per_elem).astype(np.float64)
    unscaled = [n for n, dt in dtypes.items() if dt == "F8_E4M3" and n + "_scale_inv" not in dtypes]
    if unscaled:
        raise ValueError(f"F8_E4M3 tensors without a _scale_inv: {unscaled[:3]}")


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: ndarray}; stored as F32 (or I32 for integer arrays)."""
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs = []
    offset = 0
    for name, a in tensors.items():
        if np.issubdtype(a.dtype, np.integer):
            data, dt = np.ascontiguousarray(a, dtype="<i4").tobytes(), "I32"
        else:
            data, dt = np.ascontiguousarray(a, dtype="<f4").tobytes(), "F32"
        header[name] = {"dtype": dt, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load_checkpoint(model_dir):
    """Return (config dict, {tensor name: float64 ndarray})."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    dtypes = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        for fn in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(model_dir, fn), dtypes)
            for name, a in part.items():
                if name in weights:
                    raise ValueError(f"duplicate tensor {name}")
                weights[name] = a
        missing = [k for k in weight_map if k not in weights]
        if missing:
            raise ValueError(f"index lists tensors not found in shards: {missing[:5]}")
    else:
        weights = read_safetensors(os.path.join(model_dir, "model.safetensors"), dtypes)
    apply_fp8_scales(cfg, weights, dtypes)
    return cfg, weights


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

def rms_norm(x, w, eps):
    """x [..., n], w [n]. docs/models.md §3.2, all float64 (the bf16 cast is not modelled)."""
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(z):
    return z / (1.0 + np.exp(-z))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def mlp(x, gate_w, up_w, down_w):
    """SwiGLU: x [T, H]; gate_w, up_w [I, H]; down_w [H, I] -> [T, H]."""
    return (silu(x @ gate_w.T) * (x @ up_w.T)) @ down_w.T


def get_mscale(s, m):
    """docs/models.md §3.6: yarn_get_mscale."""
    return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0


def yarn_inv_freq(dim, base, factor, orig_max_pos, beta_fast, beta_slow):
    """docs/models.md §3.6 (DeepSeek YaRN). Returns (inv_freq [dim/2] float64, low, high)."""
    i = np.arange(dim // 2, dtype=np.float64)
    pos_freqs = base ** (2.0 * i / dim)
    freq_extra = 1.0 / pos_freqs
    freq_inter = 1.0 / (factor * pos_freqs)

    def corr_dim(r):
        return dim * math.log(orig_max_pos / (r * 2.0 * math.pi)) / (2.0 * math.log(base))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    hi = high + 0.001 if low == high else high
    ramp = np.clip((i - low) / (hi - low), 0.0, 1.0)
    mask = 1.0 - ramp                       # 1 = keep the original (extrapolated) frequency
    inv_freq = freq_inter * (1.0 - mask) + freq_extra * mask
    return inv_freq, low, high


def rope_params(cfg):
    """Return (inv_freq [dr/2], cos/sin factor m_rope, softmax_scale) from the config."""
    dr = cfg["qk_rope_head_dim"]
    base = float(cfg.get("rope_theta", 10000.0))
    scale = (cfg["qk_nope_head_dim"] + dr) ** -0.5
    rs = cfg.get("rope_scaling")
    if rs is None:
        inv = 1.0 / base ** (np.arange(0, dr, 2, dtype=np.float64) / dr)
        return inv, 1.0, scale
    kind = rs.get("type", rs.get("rope_type"))
    if kind != "yarn":
        raise ValueError(f"unsupported rope_scaling type {kind!r}")
    factor = float(rs["factor"])
    mscale = float(rs.get("mscale", 1.0))
    mscale_all_dim = float(rs.get("mscale_all_dim", 0.0))
    inv, _, _ = yarn_inv_freq(dr, base, factor,
                              float(rs.get("original_max_position_embeddings", 4096)),
                              float(rs.get("beta_fast", 32)), float(rs.get("beta_slow", 1)))
    m_rope = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
    if mscale_all_dim:                      # docs/models.md §3.7: only when nonzero
        scale *= get_mscale(factor, mscale_all_dim) ** 2
    return inv, m_rope, scale


def apply_rope(x, positions, inv_freq, m_rope):
    """docs/models.md §3.5: rotate adjacent pairs (x[2i], x[2i+1]) by angle p*inv_freq[i].

    x [T, ..., dr], positions [T]. Output keeps the interleaved lane order (the
    vLLM / HF-native form); q.k is identical to the remote code's half-split order.
    """
    theta = positions.astype(np.float64)[:, None] * inv_freq[None, :]      # [T, dr/2]
    cos = np.cos(theta) * m_rope
    sin = np.sin(theta) * m_rope
    cos = cos.reshape(cos.shape[:1] + (1,) * (x.ndim - 2) + cos.shape[1:])  # broadcast over heads
    sin = sin.reshape(cos.shape)
    xe, xo = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xe * cos - xo * sin
    out[..., 1::2] = xo * cos + xe * sin
    return out


# ---------------------------------------------------------------------------
# Router (docs/models.md §3.8)
# ---------------------------------------------------------------------------

def topk_desc(values, k):
    """Indices of the k largest values, ties broken towards the lowest index."""
    return np.argsort(-values, kind="stable")[:k]


def route(logits_row, cfg, bias=None):
    """One token's router. logits_row [E] (float64).

    Returns (idx [k], weights [k], margin), where margin is the gap between the
    k-th and (k+1)-th selection values (how close the choice was to flipping).
    """
    E = logits_row.shape[0]
    k = cfg["num_experts_per_tok"]
    method = cfg.get("topk_method", "greedy")
    func = cfg.get("scoring_func", "softmax")
    if func == "softmax":
        scores = softmax(logits_row)
    elif func == "sigmoid":
        scores = sigmoid(logits_row)
    else:
        raise ValueError(f"unsupported scoring_func {func!r}")

    if method == "greedy":
        sel = scores
    elif method in ("group_limited_greedy", "noaux_tc"):
        G, keep = cfg["n_group"], cfg["topk_group"]
        per = E // G                               # group g = experts [g*per, (g+1)*per)
        if method == "group_limited_greedy":
            choice = scores
            gscore = choice.reshape(G, per).max(axis=1)                      # group score = max
            masked_value = 0.0                                               # as in the remote code
        else:
            if bias is None:
                raise ValueError("noaux_tc needs mlp.gate.e_score_correction_bias")
            choice = scores + bias                                           # bias: selection only
            gscore = np.sort(choice.reshape(G, per), axis=1)[:, ::-1][:, :2].sum(axis=1)  # top-2 sum
            masked_value = -np.inf                                           # as moerun (§3.8)
        kept = topk_desc(gscore, keep)
        allowed = np.zeros(E, dtype=bool)
        for g in kept:
            allowed[g * per:(g + 1) * per] = True
        sel = np.where(allowed, choice, masked_value)
    else:
        raise ValueError(f"unsupported topk_method {method!r}")

    idx = topk_desc(sel, k)
    ordered = np.sort(sel)[::-1]
    margin = ordered[k - 1] - ordered[k] if k < E else np.inf
    w = scores[idx].copy()                     # weights always from the un-biased scores

    norm = bool(cfg.get("norm_topk_prob", False))
    rsf = float(cfg.get("routed_scaling_factor", 1.0))
    if cfg.get("model_type") == "deepseek_v3":
        if norm:                               # V3 (HF and remote code): renormalise, then always scale
            w = w / (w.sum() + 1e-20)
        w = w * rsf
    else:
        if k > 1 and norm:                     # V2 remote code: renormalise OR scale, never both
            w = w / (w.sum() + 1e-20)
        else:
            w = w * rsf
    return idx, w, margin


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def is_moe_layer(cfg, l):
    return (cfg.get("n_routed_experts") is not None
            and l >= cfg.get("first_k_dense_replace", 0)
            and l % cfg.get("moe_layer_freq", 1) == 0)


def mla(a, positions, W, p, cfg, rope):
    """docs/models.md §3.3. a [T, H] -> [T, H]."""
    T = a.shape[0]
    nh = cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    r_kv = cfg["kv_lora_rank"]
    inv_freq, m_rope, scale = rope
    ln_eps = 1e-6          # q_a/kv_a_layernorm: the module default eps (docs/models.md §3.2)

    # Query: [T, nh*(dn+dr)]
    if cfg.get("q_lora_rank") is None:
        q = a @ W[f"{p}.q_proj.weight"].T
    else:
        cq = rms_norm(a @ W[f"{p}.q_a_proj.weight"].T, W[f"{p}.q_a_layernorm.weight"], ln_eps)
        q = cq @ W[f"{p}.q_b_proj.weight"].T
    q = q.reshape(T, nh, dn + dr)
    q_nope, q_pe = q[:, :, :dn], q[:, :, dn:]                      # [T, nh, dn], [T, nh, dr]

    # Key / value
    ckv = a @ W[f"{p}.kv_a_proj_with_mqa.weight"].T                 # [T, r_kv+dr]
    c_kv = rms_norm(ckv[:, :r_kv], W[f"{p}.kv_a_layernorm.weight"], ln_eps)  # [T, r_kv]
    k_pe = ckv[:, r_kv:]                                            # [T, dr], shared by all heads
    kv = (c_kv @ W[f"{p}.kv_b_proj.weight"].T).reshape(T, nh, dn + dv)
    k_nope, v = kv[:, :, :dn], kv[:, :, dn:]                        # [T, nh, dn], [T, nh, dv]

    q_pe = apply_rope(q_pe, positions, inv_freq, m_rope)
    k_pe = apply_rope(k_pe, positions, inv_freq, m_rope)

    causal = np.triu(np.ones((T, T), dtype=bool), k=1)              # True where j > i
    o = np.empty((T, nh, dv))
    for h in range(nh):
        s = scale * (q_nope[:, h, :] @ k_nope[:, h, :].T + q_pe[:, h, :] @ k_pe.T)  # [T, T]
        s = np.where(causal, -np.inf, s)
        P = softmax(s)
        o[:, h, :] = P @ v[:, h, :]
    return o.reshape(T, nh * dv) @ W[f"{p}.o_proj.weight"].T        # [T, H]


def expert_weights(W, p, e, I):
    """(gate [I,H], up [I,H], down [H,I]) for routed expert e; per-expert or fused layout."""
    fused = f"{p}.experts.gate_up_proj"
    if fused in W:
        gu = W[fused][e]                                            # [2I, H]
        return gu[:I], gu[I:], W[f"{p}.experts.down_proj"][e]       # down [H, I]
    q = f"{p}.experts.{e}"
    return W[f"{q}.gate_proj.weight"], W[f"{q}.up_proj.weight"], W[f"{q}.down_proj.weight"]


def moe(x, W, p, cfg, margins):
    """docs/models.md §3.8 + §3.9. x [T, H] -> [T, H]. Appends per-token margins to `margins`."""
    I = cfg["moe_intermediate_size"]
    logits = x @ W[f"{p}.gate.weight"].T                            # [T, E]
    bias = W.get(f"{p}.gate.e_score_correction_bias")               # [E] or None
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        idx, w, margin = route(logits[t], cfg, bias)
        margins.append(margin)
        for e, we in zip(idx, w):
            g, u, d = expert_weights(W, p, int(e), I)
            out[t] += we * mlp(x[t:t + 1], g, u, d)[0]
    if cfg.get("n_shared_experts"):
        out += mlp(x, W[f"{p}.shared_experts.gate_proj.weight"],
                   W[f"{p}.shared_experts.up_proj.weight"],
                   W[f"{p}.shared_experts.down_proj.weight"])
    return out


def forward(cfg, W, tokens, positions_start=0, dump=None, router_margins=None):
    """tokens: list of ints. Returns logits [T, vocab] float64."""
    T = len(tokens)
    V = cfg["vocab_size"]
    for t in tokens:
        if not 0 <= t < V:
            raise ValueError(f"token id {t} outside [0, {V})")
    eps = cfg["rms_norm_eps"]
    positions = np.arange(positions_start, positions_start + T)
    rope = rope_params(cfg)

    h = W["model.embed_tokens.weight"][np.asarray(tokens)]          # [T, H], no scaling
    if dump is not None:
        dump["embeddings"] = h.copy()
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        a = rms_norm(h, W[f"{p}.input_layernorm.weight"], eps)
        h = h + mla(a, positions, W, f"{p}.self_attn", cfg, rope)
        m = rms_norm(h, W[f"{p}.post_attention_layernorm.weight"], eps)
        if is_moe_layer(cfg, l):
            margins = []
            h = h + moe(m, W, f"{p}.mlp", cfg, margins)
            if router_margins is not None:
                router_margins[l] = margins
        else:
            h = h + mlp(m, W[f"{p}.mlp.gate_proj.weight"], W[f"{p}.mlp.up_proj.weight"],
                        W[f"{p}.mlp.down_proj.weight"])
        if dump is not None:
            dump[f"hidden.{l}"] = h.copy()
    h = rms_norm(h, W["model.norm.weight"], eps)
    if dump is not None:
        dump["final_norm"] = h.copy()
    return h @ W["lm_head.weight"].T                                # [T, V]


# ---------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------

def self_test():
    import tempfile
    fails = []

    def check(name, ok, detail=""):
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}")
        if not ok:
            fails.append(name)

    # 1. YaRN inv_freq for the real V2-Lite config (the list in docs/models.md §3.6).
    spec_inv = [1.0, 0.7498942, 0.5623413, 0.4216965, 0.3162278, 0.2371374, 0.1778279,
                0.1333521, 0.1, 0.07498942, 0.05623413, 0.03900693, 0.02687936, 0.01837815,
                0.01244796, 0.008334509, 0.0055, 0.003561997, 0.002249365, 0.001370514,
                7.905694e-4, 4.149904e-4, 1.778279e-4, 3.333804e-5, 2.5e-5, 1.874736e-5,
                1.405853e-5, 1.054241e-5, 7.905694e-6, 5.928434e-6, 4.445699e-6, 3.333804e-6]
    inv, low, high = yarn_inv_freq(64, 10000.0, 40.0, 4096.0, 32.0, 1.0)
    check("V2-Lite YaRN low/high = 10/23", (low, high) == (10, 23), f"{low}/{high}")
    rel = np.max(np.abs(inv - np.array(spec_inv)) / np.array(spec_inv))
    check("V2-Lite YaRN inv_freq matches spec list", rel < 1e-6, f"max rel err {rel:.2e}")

    # 2. mscale and softmax scale (docs/models.md §3.7).
    # Published tables print 1.2608042; the exact value is 1.26080378 (the scale below is exact).
    gm = get_mscale(40, 0.707)
    check("get_mscale(40, 0.707) ~ 1.2608042", abs(gm - 1.2608042) < 1e-6, f"{gm:.8f}")
    lite = {"qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rope_theta": 10000,
            "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                             "beta_fast": 32, "beta_slow": 1, "mscale": 0.707,
                             "mscale_all_dim": 0.707}}
    inv2, m_rope, sc = rope_params(lite)
    check("V2-Lite softmax_scale = 0.11472139", abs(sc - 0.11472139) < 1e-8, f"{sc:.8f}")
    check("V2-Lite cos/sin factor = 1.0", m_rope == 1.0)
    check("rope_params uses yarn_inv_freq", np.array_equal(inv2, inv))
    v3 = json.loads(json.dumps(lite))
    v3["rope_scaling"]["mscale"] = v3["rope_scaling"]["mscale_all_dim"] = 1.0
    _, m3, sc3 = rope_params(v3)
    check("V3 softmax_scale = 0.13523378", abs(sc3 - 0.13523378) < 1e-8, f"{sc3:.8f}")
    check("V3 cos/sin factor = 1.0", m3 == 1.0)

    # 3. Tiny test-model YaRN (dim 8, L0 1024): ramp [0, 1/3, 2/3, 1].
    tinv, tlow, thigh = yarn_inv_freq(8, 10000.0, 40.0, 1024.0, 32.0, 1.0)
    check("tiny YaRN low/high = 0/3", (tlow, thigh) == (0, 3), f"{tlow}/{thigh}")
    base = 1.0 / 10000.0 ** (np.arange(4) * 2 / 8)
    expect = np.array([base[0], base[1] * (2 / 3 + 1 / 120), base[2] * (1 / 3 + 2 / 120), base[3] / 40])
    check("tiny YaRN blends i=1,2", np.allclose(tinv, expect, rtol=1e-12), str(tinv))

    # 4. RoPE: adjacent-pair rotation vs the remote-code permute + rotate_half form.
    rng = np.random.default_rng(1)
    T, d = 7, 64
    pos = np.arange(3, 3 + T)
    x = rng.standard_normal((T, d))
    y = rng.standard_normal((T, d))
    mine_x, mine_y = apply_rope(x, pos, inv, 1.0), apply_rope(y, pos, inv, 1.0)
    freqs = pos[:, None] * inv[None, :]
    emb = np.concatenate([freqs, freqs], axis=1)
    cos, sin = np.cos(emb), np.sin(emb)

    def remote(z):
        zp = z.reshape(T, d // 2, 2).transpose(0, 2, 1).reshape(T, d)   # evens then odds
        rot = np.concatenate([-zp[:, d // 2:], zp[:, :d // 2]], axis=1)  # rotate_half
        return zp * cos + rot * sin

    rx, ry = remote(x), remote(y)
    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    check("RoPE lanes = remote-code lanes (permuted)", np.allclose(mine_x[:, perm], rx, atol=1e-12))
    check("RoPE q.k invariant to lane order",
          np.allclose(mine_x @ mine_y.T, rx @ ry.T, atol=1e-10))
    # relative-position property: <rope(q,p1), rope(k,p2)> depends only on p1-p2
    q1 = apply_rope(x[:1], np.array([5]), inv, 1.0) @ apply_rope(y[:1], np.array([2]), inv, 1.0).T
    q2 = apply_rope(x[:1], np.array([105]), inv, 1.0) @ apply_rope(y[:1], np.array([102]), inv, 1.0).T
    check("RoPE relative-position property", np.allclose(q1, q2, atol=1e-10))

    # 5. Router semantics.
    cfg = {"num_experts_per_tok": 2, "topk_method": "greedy", "scoring_func": "softmax",
           "norm_topk_prob": False, "routed_scaling_factor": 1.0, "model_type": "deepseek_v2"}
    idx, w, _ = route(np.array([0.0, 1.0, 1.0, 1.0]), cfg)
    check("greedy ties -> lowest expert id", list(idx) == [1, 2], str(idx))
    sm = softmax(np.array([0.0, 1.0, 1.0, 1.0]))
    check("greedy weights = raw softmax", np.allclose(w, sm[[1, 2]]))
    cfg_g = dict(cfg, topk_method="group_limited_greedy", n_group=4, topk_group=2,
                 num_experts_per_tok=3, routed_scaling_factor=16.0)
    # groups of 2: g0=[5,0] g1=[4,4] g2=[4.5,-9] g3=[0,0] -> max: 5,4,4.5,0 -> keep g0,g2
    lg = np.array([5.0, 0.0, 4.0, 4.0, 4.5, -9.0, 0.0, 0.0])
    idx, w, _ = route(lg, cfg_g)
    check("group_limited_greedy keeps groups by max", list(idx) == [0, 4, 1], str(idx))
    check("group_limited_greedy weights x16, no renorm", np.allclose(w, 16 * softmax(lg)[[0, 4, 1]]))
    cfg_n = dict(cfg_g, norm_topk_prob=True)
    _, w, _ = route(lg, cfg_n)
    check("deepseek_v2 norm_topk_prob: renorm, no scale", np.allclose(w.sum(), 1.0))
    cfg_v3 = {"num_experts_per_tok": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
              "n_group": 2, "topk_group": 1, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
              "model_type": "deepseek_v3"}
    # 2 groups of 4. Unbiased, group 0 = experts 0..3 would win; the bias flips it to group 1.
    lg3 = np.array([2.0, 1.9, -3.0, -3.0, 1.0, 0.9, 0.8, -3.0])
    b3 = np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.3, 0.0])
    idx, w, _ = route(lg3, cfg_v3, b3)
    s3 = sigmoid(lg3)
    check("noaux_tc: bias picks group (top-2 sum) and experts", list(idx) == [4, 6], str(idx))
    check("noaux_tc: weights from unbiased scores, renorm x2.5",
          np.allclose(w, 2.5 * s3[[4, 6]] / s3[[4, 6]].sum()))
    _, w, _ = route(lg3, dict(cfg_v3, norm_topk_prob=False), b3)
    check("deepseek_v3 without renorm still scales", np.allclose(w, 2.5 * s3[[4, 6]]))

    # 6. safetensors round trip incl. BF16 decode.
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "t.safetensors")
        a = rng.standard_normal((3, 5)).astype(np.float32)
        write_safetensors(path, {"a": a})
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        check("safetensors header padded to 8", n % 8 == 0 and raw[8:9] == b"{")
        check("safetensors F32 round trip",
              np.array_equal(read_safetensors(path)["a"], a.astype(np.float64)))
        # BF16 file: 1.0, -2.0, 0.5 (0x3F80, 0xC000, 0x3F00), then an F32 tensor
        bf = struct.pack("<3H", 0x3F80, 0xC000, 0x3F00)
        f32 = a.astype("<f4").tobytes()
        hdr = {"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
               "y": {"dtype": "F32", "shape": [3, 5], "data_offsets": [6, 6 + len(f32)]}}
        hj = json.dumps(hdr).encode()
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj + bf + f32)
        back = read_safetensors(path)
        check("BF16 decode", list(back["x"]) == [1.0, -2.0, 0.5], str(back["x"]))
        check("F32 decode at an unaligned offset", np.array_equal(back["y"], a.astype(np.float64)))

    # 6. FP8 e4m3fn decoding and block dequantisation (docs/models.md §2.3).
    dec = decode_e4m3(np.arange(256, dtype=np.uint8))
    check("e4m3: 2 NaN codes (0x7F, 0xFF)", np.isnan(dec).sum() == 2 and np.isnan(dec[[0x7F, 0xFF]]).all())
    check("e4m3 landmarks 448 / 2^-6 / 2^-9 / 1 / -0",
          (dec[0x7E], dec[0x08], dec[0x01], dec[0x38]) == (448.0, 2.0 ** -6, 2.0 ** -9, 1.0)
          and dec[0x80] == 0 and np.signbit(dec[0x80]))
    wts = {"w": np.full((130, 3), dec[0x3C]),                # decoded 1.5 everywhere
           "w_scale_inv": np.array([[0.5], [3.0]])}
    apply_fp8_scales({}, wts, {"w": "F8_E4M3", "w_scale_inv": "F32"})
    check("fp8 block dequant: rows 0..127 x 0.5, 128..129 (partial block) x 3",
          "w_scale_inv" not in wts and (wts["w"][:128] == 0.75).all() and (wts["w"][128:] == 4.5).all())

    print(f"self-test: {'PASS' if not fails else 'FAIL'} ({len(fails)} failed)")
    return 0 if not fails else 1


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--tokens", help="comma-separated token ids, e.g. 5,17,3")
    ap.add_argument("--output", help="output .safetensors path")
    ap.add_argument("--positions-start", type=int, default=0)
    ap.add_argument("--prefix-check", action="store_true",
                    help="check every prefix run reproduces the full run's rows")
    ap.add_argument("--dump-hidden", action="store_true",
                    help="also write embeddings, hidden.L and final_norm tensors")
    ap.add_argument("--quiet", action="store_true", help="no router summary on stderr")
    ap.add_argument("--min-router-margin", type=float, default=None,
                    help="exit 3 if any top-k router selection margin is below this")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)

    if args.self_test:
        return self_test()
    if not args.model_dir or args.tokens is None:
        ap.error("MODEL_DIR and --tokens are required (or use --self-test)")
    tokens = [int(t) for t in args.tokens.replace(" ", "").split(",") if t != ""]
    if not tokens:
        ap.error("--tokens is empty")
    if args.positions_start < 0:
        ap.error("--positions-start must be >= 0")

    try:
        cfg, W = load_checkpoint(args.model_dir)
        dump = {} if args.dump_hidden else None
        margins = {}
        logits = forward(cfg, W, tokens, args.positions_start, dump, margins)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if not np.all(np.isfinite(logits)):
        print("error: non-finite logits", file=sys.stderr)
        return 1

    if not args.quiet:
        for l, m in sorted(margins.items()):
            m = np.array(m)
            t = int(np.argmin(m))
            print(f"router layer {l}: min top-k selection margin {m[t]:.3e} (token index {t}), "
                  f"median {np.median(m):.3e}", file=sys.stderr)

    all_margins = [x for m in margins.values() for x in m]
    min_margin = min(all_margins) if all_margins else float("inf")

    status = 0
    if args.prefix_check:
        worst = 0.0
        for t in range(1, len(tokens)):
            part = forward(cfg, W, tokens[:t], args.positions_start)
            worst = max(worst, float(np.max(np.abs(part - logits[:t]))))
        ok = worst < 1e-9
        print(f"prefix-check: {'ok' if ok else 'FAIL'} (max |diff| {worst:.3e} over "
              f"{len(tokens) - 1} prefixes)", file=sys.stderr)
        status = 0 if ok else 1

    if args.output:
        out = {"logits": logits}
        if dump is not None:
            out.update(dump)
        meta = {"format": "pt", "tokens": ",".join(map(str, tokens)),
                "positions_start": str(args.positions_start),
                "model_dir": os.path.abspath(args.model_dir),
                "router_min_margin": repr(min_margin)}
        write_safetensors(args.output, out, meta)
    if status == 0 and args.min_router_margin is not None and min_margin < args.min_router_margin:
        print(f"router margin {min_margin:.3e} below --min-router-margin "
              f"{args.min_router_margin:.3e}", file=sys.stderr)
        status = 3
    return status


if __name__ == "__main__":
    sys.exit(main())
