#!/usr/bin/python3
"""Write small random DeepSeek-V2-family Hugging Face checkpoint directories.

Purpose: test fixtures for moerun's DeepSeek-V2 / V3 model code. The output is
checked against tests/model/ref_deepseek.py, a float64 reference forward pass.
Each checkpoint has the real DeepSeek structure: MLA attention, YaRN rope
scaling, one dense first layer (first_k_dense_replace = 1), then MoE layers
with shared and routed experts, and an untied lm_head. Tensor names and shapes
follow docs/models.md §2.1. The safetensors writer is
plain Python (docs/models.md §2.2).

Usage:
  make_test_model.py OUT_DIR [--arch deepseek|qwen3_moe|qwen2_moe|mixtral|olmoe] [--variant lite|v2|v3]
                     [--dtype f32|bf16]
                     [--shards N] [--seed S] [--layers L]
                     [--rope-mscale M] [--fused-experts] [--fp8]

Variants (the tiny sizes are in BASE_CONFIG below):
  lite  deepseek_v2, q_lora_rank null (plain q_proj), greedy, softmax,
        norm_topk_prob false, routed_scaling_factor 1.0
  v2    deepseek_v2, q_lora (q_a_proj, q_a_layernorm, q_b_proj),
        group_limited_greedy (n_group 4, topk_group 2), softmax,
        norm_topk_prob false, routed_scaling_factor 16.0
  v3    deepseek_v3, q_lora, noaux_tc, sigmoid, e_score_correction_bias
        (stored as F32, like the real V3), n_group 4, topk_group 2,
        norm_topk_prob true, routed_scaling_factor 2.5,
        yarn mscale 1.0 / mscale_all_dim 1.0

--arch qwen3_moe writes a Qwen3-MoE checkpoint instead (QWEN3_MOE_CONFIG below;
checked by tests/model/ref_qwen3_moe.py; docs/models.md §6): GQA with 8 query
heads sharing 4 KV heads of head_dim 16 (8 x 16 = 128 != hidden 64, so head_dim
is really read), q_norm / k_norm, MoE on every layer (16 experts, top-4,
norm_topk_prob true, no shared expert), untied lm_head. --variant is ignored;
--qwen-mlp-only-layers L,.. makes those layers dense and --tie-embeddings drops
lm_head.weight.

--arch qwen2_moe / mixtral / olmoe write the other GQA families (GQA_CONFIGS below;
checked by tests/model/ref_gqa_moe.py; docs/models.md §7-§9), each in its real
Hugging Face layout:
  qwen2_moe  q/k/v_proj biases, no q/k norm, head_dim = hidden / heads (no field),
             16 experts top-4 (norm_topk_prob false) plus a shared expert
             (mlp.shared_expert.*, width 64) scaled by sigmoid(mlp.shared_expert_gate);
             mlp_only_layers [1] by default, so both layer kinds are present
             (--qwen-mlp-only-layers / --qwen-decoder-sparse-step change that)
  mixtral    model.layers.N.block_sparse_moe.gate.weight and
             block_sparse_moe.experts.E.w1 (gate) / w3 (up) / w2 (down), 8 experts
             of width intermediate_size, top-2 always renormalised, rope_theta 1e6
  olmoe      q_norm [heads * head_dim] and k_norm [kv_heads * head_dim] over the
             whole projections, 16 experts top-4 (norm_topk_prob false);
             --olmoe-clip-qkv C sets clip_qkv

Optional extras (off by default):
  --rope-mscale M  overrides rope_scaling.mscale only. The cos/sin factor
                   get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
                   is then no longer 1.0, so that path gets tested too.
  --fused-experts  stores the routed experts in the transformers-v5 fused form:
                   mlp.experts.gate_up_proj [E, 2*I, H] (rows [0,I) gate,
                   [I,2I) up) and mlp.experts.down_proj [E, H, I]. The values
                   are the same as without the flag, so for one seed both
                   forms must give identical logits.
  --fp8            DeepSeek-V3's release format (docs/models.md §2.3): every
                   2-D weight of the layers (attention projections, dense MLP,
                   routed and shared experts) is stored F8_E4M3 with a
                   "<name>_scale_inv" F32 tensor [ceil(R/128), ceil(C/128)],
                   W = fp8 * scale_inv per 128 x 128 block; embeddings,
                   lm_head, norms, the router and its bias keep --dtype.
                   config.json gets quantization_config (quant_method fp8,
                   fmt e4m3, weight_block_size [128, 128], dynamic). The
                   blocks are the real 128 x 128 ones (no block-size override):
                   --fp8 sets hidden_size 192, intermediate_size 160 and
                   moe_intermediate_size 192 (unless --moe-intermediate), so
                   matrices span several blocks and end in partial ones (192
                   = 128 + 64, 160 = 128 + 32) and tensor-parallel slices
                   cross block edges (expert rows [96, 192) under --tp 2;
                   96 is a whole number of q8_0 blocks, so --weight-format
                   q8_0 keeps its format on every layout). Per block:
                   scale = max|W| / 448 (f32), code = e4m3fn(W / scale) rounded
                   to nearest even, saturating at +-448 (fp8_encode below,
                   checked by fp8_self_check on every --fp8 run).

Output: config.json, plus either model.safetensors (--shards 1), or
model-0000K-of-00000N.safetensors (5-digit index, 6-digit total, as DeepSeek
names them) and model.safetensors.index.json. Tensors are dealt round-robin
over the shards, so one layer's tensors land in several files.
Deterministic for a given (variant, dtype, seed, layers, flags).
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys

import numpy as np

# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

# Shared tiny sizes. YaRN check for qk_rope_head_dim 8, base 10000, L0 1024:
#   corr_dim(r) = 8 * ln(1024 / (r*2*pi)) / (2 * ln 10000)
#   corr_dim(32) = 0.7071 -> low  = max(floor(.), 0)  = 0
#   corr_dim(1)  = 2.2122 -> high = min(ceil(.), 7)   = 3
#   ramp over i = 0..3 = [0, 1/3, 2/3, 1]: i=0 keeps the base frequency,
#   i=1 and i=2 blend, i=3 is fully interpolated (freq / factor).
BASE_CONFIG = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 16,
    "n_shared_experts": 2,
    "num_experts_per_tok": 4,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "kv_lora_rank": 32,
    "q_lora_rank": None,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40,
        "original_max_position_embeddings": 1024,
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
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "rms_norm_eps": 1e-06,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "use_cache": True,
    "ep_size": 1,
}

VARIANT_OVERRIDES = {
    "lite": {},
    "v2": {
        "q_lora_rank": 48,
        "topk_method": "group_limited_greedy",
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 16.0,
    },
    "v3": {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "q_lora_rank": 48,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "n_group": 4,
        "topk_group": 2,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "num_nextn_predict_layers": 0,   # no MTP tensors are written
        "rope_scaling": {
            "type": "yarn",
            "factor": 40,
            "original_max_position_embeddings": 1024,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
    },
}


# Tiny Qwen3-MoE (transformers Qwen3MoeConfig field names).
QWEN3_MOE_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "num_experts": 16,
    "num_experts_per_tok": 4,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-06,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 3,
    "router_aux_loss_coef": 0.001,
    "output_router_logits": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "initializer_range": 0.02,
    "use_cache": True,
}


# Tiny Qwen2-MoE / Mixtral / OLMoE (transformers Qwen2MoeConfig, MixtralConfig, OlmoeConfig field
# names; docs/models.md §7-§9). Every family has 8 query heads sharing 4 KV heads of 16 lanes.
GQA_CONFIGS = {
    "qwen2_moe": {
        "architectures": ["Qwen2MoeForCausalLM"],
        "model_type": "qwen2_moe",
        "vocab_size": 300,
        "hidden_size": 128,                 # head_dim = 128 / 8 = 16 (Qwen2-MoE has no head_dim field)
        "intermediate_size": 96,            # dense layers (mlp_only_layers)
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "norm_topk_prob": False,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [1],
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 3,
        "attention_dropout": 0.0,
        "router_aux_loss_coef": 0.001,
        "output_router_logits": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "use_cache": True,
    },
    "mixtral": {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "vocab_size": 300,
        "hidden_size": 64,
        "head_dim": 16,                     # 8 x 16 = 128 != hidden: head_dim is really read
        "intermediate_size": 32,            # the experts' width (Mixtral has no dense layers)
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-05,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "output_router_logits": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "use_cache": True,
    },
    "olmoe": {
        "architectures": ["OlmoeForCausalLM"],
        "model_type": "olmoe",
        "vocab_size": 300,
        "hidden_size": 128,                 # head_dim = 128 / 8 = 16
        "intermediate_size": 32,            # the experts' width (OLMoE has no dense layers)
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "norm_topk_prob": False,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rms_norm_eps": 1e-05,
        "clip_qkv": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "router_aux_loss_coef": 0.01,
        "output_router_logits": False,
        "pad_token_id": 1,
        "bos_token_id": None,
        "eos_token_id": 1,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "use_cache": True,
    },
}


def gqa_head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def make_qwen3_weights(cfg, rng, arch="qwen3_moe"):
    """GQA-family tensors (docs/models.md §6.2, §7.2, §8.2, §9.2); same drawing rules as
    make_weights. The arch picks the biases, the q/k norms and the MoE block's names."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], gqa_head_dim(cfg)
    if arch in ("mixtral", "olmoe"):
        E = cfg["num_local_experts"] if arch == "mixtral" else cfg["num_experts"]
        I_moe, I_dense = cfg["intermediate_size"], None
    else:
        E, I_moe, I_dense = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["intermediate_size"]
    block = "block_sparse_moe" if arch == "mixtral" else "mlp"
    names = ("w1", "w3", "w2") if arch == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    out = []

    def linear(name, n_out, n_in, gain=1.0):
        w = rng.standard_normal((n_out, n_in)) * (gain / math.sqrt(n_in))
        out.append((name, w.astype(np.float32), None))

    def norm(name, n):
        out.append((name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32), None))

    def bias(name, n):
        out.append((name, (0.5 * rng.standard_normal(n)).astype(np.float32), None))

    out.append(("model.embed_tokens.weight", rng.standard_normal((V, H)).astype(np.float32), None))
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        norm(f"{p}.input_layernorm.weight", H)                                # [H]
        linear(f"{p}.self_attn.q_proj.weight", nh * hd, H)                    # [nh*hd, H]
        linear(f"{p}.self_attn.k_proj.weight", nkv * hd, H)                   # [nkv*hd, H]
        linear(f"{p}.self_attn.v_proj.weight", nkv * hd, H)                   # [nkv*hd, H]
        if arch == "qwen2_moe":
            bias(f"{p}.self_attn.q_proj.bias", nh * hd)                       # [nh*hd]
            bias(f"{p}.self_attn.k_proj.bias", nkv * hd)                      # [nkv*hd]
            bias(f"{p}.self_attn.v_proj.bias", nkv * hd)                      # [nkv*hd]
        linear(f"{p}.self_attn.o_proj.weight", H, nh * hd)                    # [H, nh*hd]
        if arch == "qwen3_moe":
            norm(f"{p}.self_attn.q_norm.weight", hd)                          # [hd], per head
            norm(f"{p}.self_attn.k_norm.weight", hd)                          # [hd]
        elif arch == "olmoe":
            norm(f"{p}.self_attn.q_norm.weight", nh * hd)                     # [nh*hd], whole q
            norm(f"{p}.self_attn.k_norm.weight", nkv * hd)                    # [nkv*hd], whole k
        norm(f"{p}.post_attention_layernorm.weight", H)                       # [H]
        moe = (l not in cfg.get("mlp_only_layers", [])) and (l + 1) % cfg.get("decoder_sparse_step", 1) == 0
        if not moe:
            linear(f"{p}.mlp.gate_proj.weight", I_dense, H)                   # [I, H]
            linear(f"{p}.mlp.up_proj.weight", I_dense, H)                     # [I, H]
            linear(f"{p}.mlp.down_proj.weight", H, I_dense)                   # [H, I]
            continue
        linear(f"{p}.{block}.gate.weight", E, H, gain=2.0)                    # [E, H] router
        for e in range(E):
            q = f"{p}.{block}.experts.{e}"
            linear(f"{q}.{names[0]}.weight", I_moe, H)                        # gate [I_moe, H]
            linear(f"{q}.{names[1]}.weight", I_moe, H)                        # up [I_moe, H]
            linear(f"{q}.{names[2]}.weight", H, I_moe)                        # down [H, I_moe]
        if arch == "qwen2_moe":
            S = cfg["shared_expert_intermediate_size"]
            linear(f"{p}.mlp.shared_expert.gate_proj.weight", S, H)           # [S, H]
            linear(f"{p}.mlp.shared_expert.up_proj.weight", S, H)             # [S, H]
            linear(f"{p}.mlp.shared_expert.down_proj.weight", H, S)           # [H, S]
            linear(f"{p}.mlp.shared_expert_gate.weight", 1, H)                # [1, H]
    norm("model.norm.weight", H)                                              # [H]
    if not cfg["tie_word_embeddings"]:
        linear("lm_head.weight", V, H)                                        # [V, H]
    return out


def make_config(variant, dtype, layers, rope_mscale=None):
    cfg = json.loads(json.dumps(BASE_CONFIG))  # deep copy
    for k, v in VARIANT_OVERRIDES[variant].items():
        cfg[k] = json.loads(json.dumps(v))
    cfg["num_hidden_layers"] = layers
    cfg["torch_dtype"] = {"f32": "float32", "bf16": "bfloat16"}[dtype]
    if rope_mscale is not None:
        cfg["rope_scaling"]["mscale"] = rope_mscale
    return cfg


def is_moe_layer(cfg, l):
    """docs/models.md §3.1: MoE iff routed experts, l >= first_k_dense_replace, l % freq == 0."""
    return (cfg.get("n_routed_experts") is not None
            and l >= cfg["first_k_dense_replace"]
            and l % cfg["moe_layer_freq"] == 0)


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def make_weights(cfg, rng, fused_experts=False):
    """Return an ordered list of (name, float32 ndarray, dtype_override or None).

    Linear weights are stored [out, in] and drawn N(0, 1/in), so y = x @ W^T keeps
    unit variance. Norm weights are 1 + 0.1*N(0,1). Embeddings are N(0,1).
    """
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    r_kv = cfg["kv_lora_rank"]
    r_q = cfg["q_lora_rank"]
    V = cfg["vocab_size"]
    I_dense = cfg["intermediate_size"]
    I_moe = cfg["moe_intermediate_size"]
    E = cfg["n_routed_experts"]
    I_shared = cfg["n_shared_experts"] * I_moe

    out = []

    def linear(name, n_out, n_in, gain=1.0):
        w = rng.standard_normal((n_out, n_in)) * (gain / math.sqrt(n_in))
        out.append((name, w.astype(np.float32), None))

    def norm(name, n):
        w = 1.0 + 0.1 * rng.standard_normal(n)
        out.append((name, w.astype(np.float32), None))

    out.append(("model.embed_tokens.weight",
                rng.standard_normal((V, H)).astype(np.float32), None))       # [V, H]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        norm(f"{p}.input_layernorm.weight", H)                                # [H]
        # --- MLA attention ---
        if r_q is None:
            linear(f"{p}.self_attn.q_proj.weight", nh * (dn + dr), H)         # [nh*(dn+dr), H]
        else:
            linear(f"{p}.self_attn.q_a_proj.weight", r_q, H)                  # [r_q, H]
            norm(f"{p}.self_attn.q_a_layernorm.weight", r_q)                  # [r_q]
            linear(f"{p}.self_attn.q_b_proj.weight", nh * (dn + dr), r_q)     # [nh*(dn+dr), r_q]
        linear(f"{p}.self_attn.kv_a_proj_with_mqa.weight", r_kv + dr, H)      # [r_kv+dr, H]
        norm(f"{p}.self_attn.kv_a_layernorm.weight", r_kv)                    # [r_kv]
        linear(f"{p}.self_attn.kv_b_proj.weight", nh * (dn + dv), r_kv)       # [nh*(dn+dv), r_kv]
        linear(f"{p}.self_attn.o_proj.weight", H, nh * dv)                    # [H, nh*dv]
        norm(f"{p}.post_attention_layernorm.weight", H)                       # [H]
        # --- MLP ---
        if not is_moe_layer(cfg, l):
            linear(f"{p}.mlp.gate_proj.weight", I_dense, H)                   # [I, H]
            linear(f"{p}.mlp.up_proj.weight", I_dense, H)                     # [I, H]
            linear(f"{p}.mlp.down_proj.weight", H, I_dense)                   # [H, I]
            continue
        # Router: gain 2 gives a clearly peaked distribution, so the top-k choice
        # has a healthy margin (fewer routing flips in low-precision engines).
        linear(f"{p}.mlp.gate.weight", E, H, gain=2.0)                        # [E, H]
        if cfg["topk_method"] == "noaux_tc":
            bias = 0.2 * rng.standard_normal(E)
            out.append((f"{p}.mlp.gate.e_score_correction_bias",
                        bias.astype(np.float32), "f32"))                      # [E], always F32
        first_expert = len(out)
        for e in range(E):
            q = f"{p}.mlp.experts.{e}"
            linear(f"{q}.gate_proj.weight", I_moe, H)                         # [I_moe, H]
            linear(f"{q}.up_proj.weight", I_moe, H)                           # [I_moe, H]
            linear(f"{q}.down_proj.weight", H, I_moe)                         # [H, I_moe]
        if fused_experts:
            # Same values as the per-expert form (same seed -> same logits), restacked.
            ex = [a for _, a, _ in out[first_expert:]]
            del out[first_expert:]
            gate_up = np.stack([np.concatenate([ex[3 * e], ex[3 * e + 1]]) for e in range(E)])
            down = np.stack([ex[3 * e + 2] for e in range(E)])
            out.append((f"{p}.mlp.experts.gate_up_proj", gate_up, None))     # [E, 2*I_moe, H]
            out.append((f"{p}.mlp.experts.down_proj", down, None))           # [E, H, I_moe]
        linear(f"{p}.mlp.shared_experts.gate_proj.weight", I_shared, H)       # [n_sh*I_moe, H]
        linear(f"{p}.mlp.shared_experts.up_proj.weight", I_shared, H)         # [n_sh*I_moe, H]
        linear(f"{p}.mlp.shared_experts.down_proj.weight", H, I_shared)       # [H, n_sh*I_moe]
    norm("model.norm.weight", H)                                              # [H]
    linear("lm_head.weight", V, H)                                            # [V, H]
    return out


# ---------------------------------------------------------------------------
# FP8 (float8_e4m3fn) weights with per-block scales, as DeepSeek-V3 ships them
# ---------------------------------------------------------------------------

FP8_BLOCK = 128
FP8_MAX = 448.0
FP8_DIMS = {"hidden_size": 192, "intermediate_size": 160, "moe_intermediate_size": 192}
FP8_QUANTIZATION_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
                           "activation_scheme": "dynamic"}


def fp8_decode(codes):
    """uint8 e4m3fn codes -> float64 values (bias 7, subnormals, 0x7F/0xFF NaN, no infinities)."""
    c = np.asarray(codes, dtype=np.int64)
    s, e, m = c >> 7, (c >> 3) & 15, c & 7
    mag = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7.0))
    v = np.where(s == 1, -mag, mag)
    return np.where((e == 15) & (m == 7), np.nan, v)


def fp8_encode(x):
    """float64 array -> uint8 e4m3fn codes: round to nearest, ties to even; saturate to +-448."""
    x = np.asarray(x, dtype=np.float64)
    nan = np.isnan(x)
    sign = np.where(np.signbit(x), 0x80, 0).astype(np.uint8)
    a = np.minimum(np.where(nan, 0.0, np.abs(x)), FP8_MAX)
    # The quantum of a's binade: 2^(e-3) for normals (a in [2^e, 2^(e+1))), 2^-9 below 2^-6.
    _, ex = np.frexp(a)                                 # a = f * 2^ex, f in [0.5, 1)
    e = np.maximum(ex - 1, -6)
    quantum = np.ldexp(1.0, e - 3)
    q = np.minimum(np.round(a / quantum) * quantum, FP8_MAX)   # np.round: ties to even
    _, qx = np.frexp(q)
    qe = qx - 1
    sub = q < 2.0 ** -6
    exp_field = np.where(sub, 0, qe + 7)
    mant = np.where(sub, q / 2.0 ** -9, (q / np.ldexp(1.0, qe) - 1.0) * 8.0)
    codes = (exp_field.astype(np.uint8) << 3) | np.rint(mant).astype(np.uint8)
    codes = codes | sign
    codes[nan] = 0x7F | sign[nan]
    return codes.astype(np.uint8)


def fp8_self_check():
    """The encoder against the decoder and the rounding rules (raises AssertionError)."""
    all_codes = np.arange(256, dtype=np.uint8)
    vals = fp8_decode(all_codes)
    finite = ~np.isnan(vals)
    assert finite.sum() == 254, "exactly 0x7F and 0xFF are NaN"
    assert (fp8_encode(vals[finite]) == all_codes[finite]).all(), "encode(decode(c)) == c"
    cases = [(1.0625, 0x38),            # halfway 1.0 / 1.125: even mantissa, 1.0
             (1.1875, 0x3A),            # halfway 1.125 / 1.25: 1.25
             (2.0 ** -10, 0x00),        # halfway 0 / 2^-9: 0
             (3 * 2.0 ** -10, 0x02),    # halfway 2^-9 / 2^-8: 2^-8
             (464.0, 0x7E), (500.0, 0x7E), (-1e9, 0xFE),   # saturate to +-448
             (0.015625, 0x08),          # 2^-6, the smallest normal
             (-0.0, 0x80)]
    for x, code in cases:
        got = int(fp8_encode(np.array([x]))[0])
        assert got == code, f"fp8_encode({x}) = {got:#x}, expected {code:#x}"
    # Block quantisation round trip (partial edge blocks): within half an e4m3 step of W.
    w = np.random.default_rng(5).standard_normal((200, 300))
    codes, scale = fp8_quantize(w)
    assert scale.shape == (2, 3)
    per_elem = np.repeat(np.repeat(scale.astype(np.float64), FP8_BLOCK, 0), FP8_BLOCK, 1)[:200, :300]
    err = np.abs(fp8_decode(codes) * per_elem - w)
    assert (err <= np.maximum(np.abs(w) * 2.0 ** -4, per_elem * 2.0 ** -10) * (1 + 1e-6)).all(), err.max()


def is_fp8_weight(name, arr):
    """The tensors DeepSeek-V3 ships in FP8: the layers' 2-D weights except the router."""
    return (arr.ndim == 2 and name.startswith("model.layers.") and name.endswith(".weight")
            and not name.endswith(".mlp.gate.weight"))


def fp8_quantize(w, block=FP8_BLOCK):
    """w [R, C] -> (uint8 codes [R, C], float32 scale_inv [ceil(R/b), ceil(C/b)])."""
    rows, cols = w.shape
    sr, sc = -(-rows // block), -(-cols // block)
    codes = np.zeros((rows, cols), dtype=np.uint8)
    scale = np.zeros((sr, sc), dtype=np.float32)
    for i in range(sr):
        for j in range(sc):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block].astype(np.float64)
            amax = float(np.abs(blk).max())
            s = np.float32(amax / FP8_MAX) if amax > 0 else np.float32(1.0)
            scale[i, j] = s
            codes[i * block:(i + 1) * block, j * block:(j + 1) * block] = fp8_encode(blk / float(s))
    return codes, scale


# ---------------------------------------------------------------------------
# safetensors writer
# ---------------------------------------------------------------------------

def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round to nearest, ties to even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    r = ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        r[nan] = np.uint16(0x7FC0)
    return r


def encode(arr, dtype):
    """Return (safetensors dtype string, little-endian bytes)."""
    if dtype == "bf16":
        return "BF16", f32_to_bf16_bits(arr).astype("<u2").tobytes()
    if dtype == "f32":
        return "F32", np.ascontiguousarray(arr, dtype="<f4").tobytes()
    if dtype == "f8":    # arr holds e4m3fn codes
        return "F8_E4M3", np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype_str, shape, bytes); written contiguously in order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)   # pad to a multiple of 8 with spaces
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for _, _, _, data in tensors:
            f.write(data)
    return offset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--arch", default="deepseek",
                    choices=["deepseek", "qwen3_moe", "qwen2_moe", "mixtral", "olmoe"])
    ap.add_argument("--qwen-mlp-only-layers", default=None, metavar="L,..",
                    help="qwen3_moe / qwen2_moe: dense layers (mlp_only_layers; qwen2_moe default 1)")
    ap.add_argument("--qwen-decoder-sparse-step", type=int, default=1, metavar="N",
                    help="qwen3_moe / qwen2_moe: decoder_sparse_step (layer l is MoE iff (l + 1) %% N == 0)")
    ap.add_argument("--tie-embeddings", action="store_true",
                    help="GQA families: tie_word_embeddings true (no lm_head.weight)")
    ap.add_argument("--kv-heads", type=int, default=None, metavar="N",
                    help="GQA families: num_key_value_heads N (e.g. 8 = no GQA, as llama.cpp's olmoe needs)")
    ap.add_argument("--olmoe-clip-qkv", type=float, default=None, metavar="C",
                    help="olmoe: clip_qkv C (q, k, v clamped to [-C, C])")
    ap.add_argument("--variant", default="lite", choices=sorted(VARIANT_OVERRIDES))
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=BASE_CONFIG["num_hidden_layers"])
    ap.add_argument("--rope-mscale", type=float, default=None,
                    help="override rope_scaling.mscale (makes the cos/sin factor != 1)")
    ap.add_argument("--fused-experts", action="store_true",
                    help="store routed experts as fused gate_up_proj/down_proj [E,...]")
    ap.add_argument("--fp8", action="store_true",
                    help="DeepSeek-V3's FP8 release format: F8_E4M3 layer weights + <name>_scale_inv "
                         "(128 x 128 blocks; sets hidden 192, intermediate 160, moe_intermediate 192)")
    ap.add_argument("--mla-dims", default=None, metavar="DN,DV,R",
                    help="override qk_nope_head_dim, v_head_dim, kv_lora_rank (e.g. 256,32,256 so "
                         "attn_k_b / attn_v_b rows fit GGUF blocks)")
    ap.add_argument("--moe-intermediate", type=int, default=None,
                    help="override moe_intermediate_size (e.g. 128 so quantised experts cut into "
                         "deterministic K-blocks of whole 32-column blocks)")
    ap.add_argument("--vocab", type=int, default=None,
                    help="override vocab_size (e.g. to match a tokenizer.json placed beside the model)")
    ap.add_argument("--tokenizer-dir", default=None,
                    help="copy tokenizer.json and tokenizer_config.json from this directory")
    args = ap.parse_args(argv)
    if args.shards < 1:
        ap.error("--shards must be >= 1")
    if args.fp8 and (args.arch != "deepseek" or args.fused_experts):
        ap.error("--fp8 writes per-expert DeepSeek checkpoints (not --arch qwen3_moe or --fused-experts)")
    if args.layers < 1:
        ap.error("--layers must be >= 1")

    gqa = args.arch != "deepseek"
    if gqa:
        cfg = json.loads(json.dumps(QWEN3_MOE_CONFIG if args.arch == "qwen3_moe" else GQA_CONFIGS[args.arch]))
        cfg["num_hidden_layers"] = args.layers
        cfg["torch_dtype"] = {"f32": "float32", "bf16": "bfloat16"}[args.dtype]
        cfg["tie_word_embeddings"] = args.tie_embeddings
        if args.arch in ("qwen3_moe", "qwen2_moe"):
            cfg["max_window_layers"] = args.layers
            if args.qwen_mlp_only_layers is not None:
                cfg["mlp_only_layers"] = [int(v) for v in args.qwen_mlp_only_layers.split(",") if v]
            cfg["mlp_only_layers"] = [l for l in cfg["mlp_only_layers"] if l < args.layers]
            cfg["decoder_sparse_step"] = args.qwen_decoder_sparse_step
        if args.kv_heads is not None:
            cfg["num_key_value_heads"] = args.kv_heads
        if args.arch == "olmoe" and args.olmoe_clip_qkv is not None:
            cfg["clip_qkv"] = args.olmoe_clip_qkv
    else:
        cfg = make_config(args.variant, args.dtype, args.layers, args.rope_mscale)
    if args.fp8:
        fp8_self_check()
        cfg.update(FP8_DIMS)
        cfg["quantization_config"] = json.loads(json.dumps(FP8_QUANTIZATION_CONFIG))
    if args.vocab is not None:
        cfg["vocab_size"] = args.vocab
    if args.moe_intermediate is not None:
        cfg["moe_intermediate_size"] = args.moe_intermediate
    if args.mla_dims is not None:
        dn, dv, r = (int(v) for v in args.mla_dims.split(","))
        cfg["qk_nope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"] = dn, dv, r
    rng = np.random.default_rng(args.seed)
    if gqa:
        weights = make_qwen3_weights(cfg, rng, args.arch)
    else:
        weights = make_weights(cfg, rng, fused_experts=args.fused_experts)
    if args.shards > len(weights):
        ap.error(f"--shards {args.shards} exceeds the tensor count {len(weights)}")

    os.makedirs(args.out_dir, exist_ok=True)
    if args.tokenizer_dir:
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(args.tokenizer_dir, fn), os.path.join(args.out_dir, fn))
    # Remove stale checkpoint files from a previous run with another shard count.
    for fn in os.listdir(args.out_dir):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(args.out_dir, fn))
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    encoded = []
    for name, arr, override in weights:
        if args.fp8 and is_fp8_weight(name, arr):
            codes, scale = fp8_quantize(arr)
            dt, data = encode(codes, "f8")
            encoded.append((name, dt, arr.shape, data))
            dt, data = encode(scale, "f32")
            encoded.append((name + "_scale_inv", dt, scale.shape, data))
            continue
        dt, data = encode(arr, override or args.dtype)
        encoded.append((name, dt, arr.shape, data))

    n = args.shards
    if n == 1:
        total = write_safetensors(os.path.join(args.out_dir, "model.safetensors"), encoded)
        files = ["model.safetensors"]
    else:
        files = [f"model-{k + 1:05d}-of-{n:06d}.safetensors" for k in range(n)]
        buckets = [[] for _ in range(n)]
        for i, t in enumerate(encoded):
            buckets[i % n].append(t)          # round-robin: layers straddle shards
        total = 0
        weight_map = {}
        for fn, bucket in zip(files, buckets):
            total += write_safetensors(os.path.join(args.out_dir, fn), bucket)
            for t in bucket:
                weight_map[t[0]] = fn
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    n_params = sum(int(np.prod(a.shape)) for _, a, _ in weights)
    print(f"wrote {args.out_dir}: arch={args.arch} variant={args.variant} dtype={args.dtype}"
          f"{' fp8' if args.fp8 else ''} "
          f"layers={args.layers} tensors={len(weights)} params={n_params} "
          f"bytes={total} files={','.join(files)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
