#!/usr/bin/env python3
"""Writes tiny random-weight GGUF files that llama.cpp loads, using only the stdlib.

They exist to test tests/compat/llama_greedy.mjs and llama_bench.mjs, and to pin down what the
llama.cpp bundled with node-llama-cpp accepts for the deepseek2 architecture (see README.md).

Usage:
  make_tiny_gguf.py OUT.gguf [--arch llama|deepseek2] [--layers N] [--q-lora-rank R]
                    [--kv-layout mla|kv_b] [--seed S] [--omit-key KEY] [--extra-tensor NAME]
                    [--block-types | --iq4-xs]

deepseek2 options:
  --q-lora-rank R   0 (default): no q-LoRA, blk.N.attn_q.weight; R > 0: attn_q_a/attn_q_a_norm/attn_q_b.
                    The key deepseek2.attention.q_lora_rank is always written (also as 0), because
                    llama.cpp reads it as required unless block_count is 26 or 27 (the "lite" rule).
  --kv-layout mla   (default) the current converter's layout: attn_k_b + attn_v_b, head_count_kv = 1,
                    key_length = kv_lora_rank + rope dim, value_length = kv_lora_rank, and the
                    key_length_mla / value_length_mla keys.
  --kv-layout kv_b  the legacy layout: one attn_kv_b, no *_mla keys, head_count_kv = head_count,
                    key_length = qk_nope + qk_rope, value_length = v_head_dim.
--omit-key / --extra-tensor make deliberately broken files (to see llama.cpp's error messages).

--block-types (deepseek2, MLA): the matrices in the ggml block types llama.cpp's quantiser mixes into
K-quant files beyond Q8_0/Q4_0/Q4_K/Q6_K, as random valid blocks (random bytes, the f16 scale
fields set so values spread about 1/sqrt(row length)): widths n_embd 256, n_ff 256, expert
ffn 96, qk_nope 32, so ffn_down_exps rows (96: a multiple of 32, not of 256) are Q5_0 as in
llama.cpp's fallback for V2-Lite's 1408-wide rows. Types by tensor: BLOCK_TYPES below. Every
other tensor stays F32; the embedding/output values are F32-exact in llama.cpp and moerun alike.
--iq4-xs: the same tensors and widths as llama.cpp's IQ4_XS files hold them: IQ4_XS where rows
are a multiple of 256, else its fallback IQ4_NL.
"""
import argparse
import random
import struct

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
GGML_F32 = 0
ALIGN = 32

# ggml type id: (name, elements per block, bytes per block, {f16 scale field offset: scale factor})
# -- the f16 fields get sd * factor (per block, times a random 0.75..1.25), sd = 1/sqrt(row length)
# (1 for token_embd): Q5_0 d (q - 16); Q5_1 d q + m; Q5_K d sc q - dmin m with random 6-bit sc, m;
# Q3_K d (sc - 32) q, q in -4..3; Q2_K d sc q - dmin m, sc, m in 0..15; IQ4_NL d table[q];
# IQ4_XS d (ls - 32) table[q], ls random 6-bit.
GGML_BLOCKS = {
    6: ("Q5_0", 32, 22, {0: 1 / 9}),
    7: ("Q5_1", 32, 24, {0: 1 / 9, 2: -16 / 9}),
    13: ("Q5_K", 256, 176, {0: 1 / 288, 2: 16 / 288}),
    11: ("Q3_K", 256, 110, {108: 1 / 40}),
    10: ("Q2_K", 256, 84, {80: 1 / 9, 82: 1.5 / 9}),
    20: ("IQ4_NL", 32, 18, {0: 1 / 73}),
    23: ("IQ4_XS", 256, 136, {0: 1 / (73 * 18)}),
}
Q5_0, Q5_1, Q5_K, Q3_K, Q2_K, IQ4_NL, IQ4_XS = 6, 7, 13, 11, 10, 20, 23
# --block-types: tensor name suffix -> ggml type (row length in the comment).
BLOCK_TYPES = {
    "token_embd.weight": Q5_K,         # 256
    "output.weight": Q3_K,             # 256
    "attn_q.weight": Q3_K,             # 256
    "attn_kv_a_mqa.weight": Q2_K,      # 256
    "attn_k_b.weight": IQ4_NL,         # qk_nope 32
    "attn_v_b.weight": Q5_1,           # kv_lora 32
    "attn_output.weight": Q5_0,        # n_head * v_dim 64
    "ffn_gate.weight": Q5_K,           # 256
    "ffn_up.weight": Q2_K,             # 256
    "ffn_down.weight": Q3_K,           # n_ff 256
    "ffn_gate_exps.weight": Q2_K,      # 256
    "ffn_up_exps.weight": Q5_K,        # 256
    "ffn_down_exps.weight": Q5_0,      # expert ffn 96: llama.cpp's Q4_K -> Q5_0 fallback
    "ffn_gate_shexp.weight": Q3_K,     # 256
    "ffn_up_shexp.weight": Q5_K,       # 256
    "ffn_down_shexp.weight": Q5_1,     # 96: the Q5_K -> Q5_1 fallback
}


def random_blocks(rng, type_id, ne, sd):
    """Random valid blocks of ggml type `type_id` for a tensor of dims `ne` (ne[0] = row length)."""
    _, block, nbytes, scales = GGML_BLOCKS[type_id]
    n = 1
    for d in ne:
        n *= d
    out = bytearray(rng.getrandbits(8) for _ in range(n // block * nbytes))
    for b in range(0, len(out), nbytes):
        s = sd * rng.uniform(0.75, 1.25)
        for off, factor in scales.items():
            out[b + off:b + off + 2] = struct.pack("<e", s * factor)
    return bytes(out)


def bytes_to_unicode():
    """GPT-2's byte -> printable unicode char table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def make_vocab():
    """A byte-level BPE vocab: 256 byte tokens, a few merges, BOS/EOS control tokens."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    types = [1] * 256  # NORMAL
    merges = []
    # each merge joins two tokens that already exist; the result becomes a new token
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"),
                 ("o", "n"), ("o", "f"), ("Ġ", "of"), ("Ġ", "in"), ("a", "n")]:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        types.append(1)
    bos = len(tokens)
    tokens.append("<｜begin▁of▁sentence｜>")
    types.append(3)  # CONTROL
    eos = len(tokens)
    tokens.append("<｜end▁of▁sentence｜>")
    types.append(3)
    return tokens, types, merges, bos, eos


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []  # (name, ne list, float list or (ggml type id, block bytes))

    def add(self, key, vtype, value, atype=None):
        self.kv.append((key, vtype, value, atype))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, vtype, v):
        fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
               BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
        if vtype == STR:
            return self._str(v)
        return struct.pack(fmt[vtype], v)

    def write(self, path):
        out = bytearray()
        out += b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))
        for key, vtype, value, atype in self.kv:
            out += self._str(key) + struct.pack("<I", vtype)
            if vtype == ARR:
                out += struct.pack("<IQ", atype, len(value))
                for v in value:
                    out += self._val(atype, v)
            else:
                out += self._val(vtype, value)
        offset = 0
        offsets = []
        blobs = []
        for name, ne, data in self.tensors:
            type_id, blob = data if isinstance(data, tuple) else (GGML_F32, struct.pack(f"<{len(data)}f", *data))
            blobs.append(blob)
            offsets.append(offset)
            out += self._str(name) + struct.pack("<I", len(ne))
            out += struct.pack(f"<{len(ne)}Q", *ne)
            out += struct.pack("<IQ", type_id, offset)
            offset += (len(blob) + ALIGN - 1) // ALIGN * ALIGN
        out += b"\0" * (-len(out) % ALIGN)
        for blob in blobs:
            out += blob + b"\0" * (-len(blob) % ALIGN)
        with open(path, "wb") as f:
            f.write(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--arch", choices=["llama", "deepseek2"], default="deepseek2")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--q-lora-rank", type=int, default=0)
    ap.add_argument("--kv-layout", choices=["mla", "kv_b"], default="mla")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--omit-key", action="append", default=[])
    ap.add_argument("--extra-tensor", action="append", default=[])
    ap.add_argument("--block-types", action="store_true")
    ap.add_argument("--iq4-xs", action="store_true")
    a = ap.parse_args()
    if a.block_types and a.iq4_xs:
        ap.error("--block-types and --iq4-xs exclude each other")
    if (a.block_types or a.iq4_xs) and (a.arch != "deepseek2" or a.kv_layout != "mla" or a.q_lora_rank != 0):
        ap.error("--block-types / --iq4-xs need --arch deepseek2 --kv-layout mla --q-lora-rank 0")

    rng = random.Random(a.seed)
    tokens, types, merges, bos, eos = make_vocab()
    n_vocab = len(tokens)
    n_embd, n_head, n_ff = (256, 4, 256) if a.block_types or a.iq4_xs else (64, 4, 96)
    w = Writer()
    arch = a.arch

    def block_type(name, row):
        if not a.block_types and not a.iq4_xs:
            return None
        ty = next((ty for suffix, ty in BLOCK_TYPES.items() if name.endswith("." + suffix) or name == suffix), None)
        if ty is not None and a.iq4_xs:
            return IQ4_XS if row % 256 == 0 else IQ4_NL
        return ty

    def t(name, ne, scale=None, const=None):
        ty = block_type(name, ne[0])
        if ty is not None:
            sd = scale if scale is not None else 1.0 / (ne[0] ** 0.5)
            w.tensors.append((name, list(ne), (ty, random_blocks(rng, ty, ne, sd))))
            return
        n = 1
        for d in ne:
            n *= d
        if const is not None:
            data = [const] * n
        else:
            s = scale if scale is not None else 1.0 / (ne[0] ** 0.5)
            data = [rng.uniform(-s, s) for _ in range(n)]
        w.tensors.append((name, list(ne), data))

    w.add("general.architecture", STR, arch)
    w.add("general.name", STR, f"tiny-{arch}")
    w.add("general.alignment", U32, ALIGN)
    w.add("general.file_type", U32, 0)  # ALL_F32
    w.add(f"{arch}.context_length", U32, 512)
    w.add(f"{arch}.embedding_length", U32, n_embd)
    w.add(f"{arch}.block_count", U32, a.layers)
    w.add(f"{arch}.feed_forward_length", U32, n_ff)
    w.add(f"{arch}.attention.head_count", U32, n_head)
    w.add(f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-6)
    w.add(f"{arch}.rope.freq_base", F32, 10000.0)
    w.add(f"{arch}.vocab_size", U32, n_vocab)

    t("token_embd.weight", [n_embd, n_vocab], scale=1.0)
    t("output_norm.weight", [n_embd], const=1.0)
    t("output.weight", [n_embd, n_vocab])

    if arch == "llama":
        n_head_kv, head_dim = 2, n_embd // n_head
        w.add("llama.attention.head_count_kv", U32, n_head_kv)
        w.add("llama.rope.dimension_count", U32, head_dim)
        for i in range(a.layers):
            p = f"blk.{i}."
            t(p + "attn_norm.weight", [n_embd], const=1.0)
            t(p + "attn_q.weight", [n_embd, n_head * head_dim])
            t(p + "attn_k.weight", [n_embd, n_head_kv * head_dim])
            t(p + "attn_v.weight", [n_embd, n_head_kv * head_dim])
            t(p + "attn_output.weight", [n_head * head_dim, n_embd])
            t(p + "ffn_norm.weight", [n_embd], const=1.0)
            t(p + "ffn_gate.weight", [n_embd, n_ff])
            t(p + "ffn_up.weight", [n_embd, n_ff])
            t(p + "ffn_down.weight", [n_ff, n_embd])
    else:
        qk_nope, qk_rope, v_dim, kv_lora = (32 if a.block_types else 16), 8, 16, 32
        n_expert, n_used, n_shared, ff_exp, n_dense = 4, 2, 1, (96 if a.block_types else 32), 1
        q_lora = a.q_lora_rank
        mla = a.kv_layout == "mla"
        w.add("deepseek2.leading_dense_block_count", U32, n_dense)
        w.add("deepseek2.attention.q_lora_rank", U32, q_lora)
        w.add("deepseek2.attention.kv_lora_rank", U32, kv_lora)
        if mla:
            w.add("deepseek2.attention.head_count_kv", U32, 1)
            w.add("deepseek2.attention.key_length", U32, kv_lora + qk_rope)
            w.add("deepseek2.attention.value_length", U32, kv_lora)
            w.add("deepseek2.attention.key_length_mla", U32, qk_nope + qk_rope)
            w.add("deepseek2.attention.value_length_mla", U32, v_dim)
        else:
            w.add("deepseek2.attention.head_count_kv", U32, n_head)
            w.add("deepseek2.attention.key_length", U32, qk_nope + qk_rope)
            w.add("deepseek2.attention.value_length", U32, v_dim)
        w.add("deepseek2.rope.dimension_count", U32, qk_rope)
        w.add("deepseek2.expert_feed_forward_length", U32, ff_exp)
        w.add("deepseek2.expert_count", U32, n_expert)
        w.add("deepseek2.expert_used_count", U32, n_used)
        w.add("deepseek2.expert_shared_count", U32, n_shared)
        w.add("deepseek2.expert_weights_scale", F32, 1.0)
        w.add("deepseek2.expert_weights_norm", BOOL, False)
        w.add("deepseek2.expert_gating_func", U32, 1)  # 1 = softmax (V2), 2 = sigmoid (V3)
        k_head = qk_nope + qk_rope
        for i in range(a.layers):
            p = f"blk.{i}."
            t(p + "attn_norm.weight", [n_embd], const=1.0)
            if q_lora > 0:
                t(p + "attn_q_a.weight", [n_embd, q_lora])
                t(p + "attn_q_a_norm.weight", [q_lora], const=1.0)
                t(p + "attn_q_b.weight", [q_lora, n_head * k_head])
            else:
                t(p + "attn_q.weight", [n_embd, n_head * k_head])
            t(p + "attn_kv_a_mqa.weight", [n_embd, kv_lora + qk_rope])
            t(p + "attn_kv_a_norm.weight", [kv_lora], const=1.0)
            # kv_b_proj as in HF: rows = head-major (qk_nope k rows, then v_dim v rows), cols = kv_lora.
            # The same random draw in both layouts, so mla and kv_b files with one seed are the
            # same model (llama_greedy.mjs must print the same tokens for both).
            s = 1.0 / kv_lora ** 0.5
            kv_b = [rng.uniform(-s, s) for _ in range(n_head * (qk_nope + v_dim) * kv_lora)]
            if mla:
                # the converter's split: k_b = kv_b[h, :nope, :].T -> ne {qk_nope, kv_lora, n_head},
                # v_b = kv_b[h, nope:, :] -> ne {kv_lora, v_dim, n_head}
                row = lambda h, j, c: kv_b[(h * (qk_nope + v_dim) + j) * kv_lora + c]
                k_b = [row(h, j, c) for h in range(n_head) for c in range(kv_lora) for j in range(qk_nope)]
                v_b = [row(h, qk_nope + j, c) for h in range(n_head) for j in range(v_dim) for c in range(kv_lora)]
                if a.block_types:  # random blocks in place of the split kv_b
                    t(p + "attn_k_b.weight", [qk_nope, kv_lora, n_head])
                    t(p + "attn_v_b.weight", [kv_lora, v_dim, n_head])
                else:
                    w.tensors.append((p + "attn_k_b.weight", [qk_nope, kv_lora, n_head], k_b))
                    w.tensors.append((p + "attn_v_b.weight", [kv_lora, v_dim, n_head], v_b))
            else:
                w.tensors.append((p + "attn_kv_b.weight", [kv_lora, n_head * (qk_nope + v_dim)], kv_b))
            t(p + "attn_output.weight", [n_head * v_dim, n_embd])
            t(p + "ffn_norm.weight", [n_embd], const=1.0)
            if i < n_dense:
                t(p + "ffn_gate.weight", [n_embd, n_ff])
                t(p + "ffn_up.weight", [n_embd, n_ff])
                t(p + "ffn_down.weight", [n_ff, n_embd])
            else:
                t(p + "ffn_gate_inp.weight", [n_embd, n_expert])
                t(p + "ffn_gate_exps.weight", [n_embd, ff_exp, n_expert])
                t(p + "ffn_up_exps.weight", [n_embd, ff_exp, n_expert])
                t(p + "ffn_down_exps.weight", [ff_exp, n_embd, n_expert])
                t(p + "ffn_gate_shexp.weight", [n_embd, ff_exp * n_shared])
                t(p + "ffn_up_shexp.weight", [n_embd, ff_exp * n_shared])
                t(p + "ffn_down_shexp.weight", [ff_exp * n_shared, n_embd])

    w.add("tokenizer.ggml.model", STR, "gpt2")
    w.add("tokenizer.ggml.pre", STR, "deepseek-llm" if arch == "deepseek2" else "default")
    w.add("tokenizer.ggml.tokens", ARR, tokens, STR)
    w.add("tokenizer.ggml.token_type", ARR, types, I32)
    w.add("tokenizer.ggml.merges", ARR, merges, STR)
    w.add("tokenizer.ggml.bos_token_id", U32, bos)
    w.add("tokenizer.ggml.eos_token_id", U32, eos)
    w.add("tokenizer.ggml.add_bos_token", BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", BOOL, False)

    for name in a.extra_tensor:
        t(name, [n_embd], const=0.0)
    w.kv = [kv for kv in w.kv if kv[0] not in a.omit_key]
    w.write(a.out)


if __name__ == "__main__":
    main()
