#!/usr/bin/env python3
"""Independent numpy reference for the load-only GGUF block types, checked bit for bit against
moerun's DequantizeRow (core/block_quant.h) through tests/core/block_tool (dequant mode).

For each of Q5_0, Q5_1, Q5_K, Q3_K, Q2_K, IQ4_NL and IQ4_XS: random blocks (random bytes, then every f16
scale field replaced by a random finite f16: any sign, zero, subnormals, up to 65504) are
dequantised here, from the byte layouts of docs/formats.md (themselves read from ggml's
ggml-common.h structs and ggml-quants.c dequantize_row_*), and by moerun; the f32 bit patterns
must be identical. Arithmetic is numpy float32 with one rounding per operation, in ggml's order:
an integer level converted to f32, times the f32 scale, then the min added or subtracted.

usage: dequant_reference.py DEQUANT_TOOL [--blocks N] [--seed S]
Exit 0 when every type matches, 1 on a mismatch (first differing element printed), 2 on errors.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

F32 = np.float32

# name: (elements per block, bytes per block, byte offsets of f16 scale fields)
TYPES = {
    "Q5_0": (32, 22, [0]),
    "Q5_1": (32, 24, [0, 2]),
    "Q5_K": (256, 176, [0, 2]),
    "Q3_K": (256, 110, [108]),
    "Q2_K": (256, 84, [80, 82]),
    "IQ4_NL": (32, 18, [0]),
    "IQ4_XS": (256, 136, [0]),
}

IQ4NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                        dtype=np.int32)


def f16(blocks, off):
    """The f16 field at byte `off` of every block, as f32 (exact)."""
    return blocks[:, off:off + 2].copy().view("<f2")[:, 0].astype(F32)


def bits(value, bit):
    return (value >> bit) & 1


def ref_q5_0(b):
    # d f16 | qh 4 bytes (u32 LE: bit j = 5th bit of element j) | qs 16 bytes: byte j = element j
    # (low nibble) and j + 16 (high nibble). x = (q - 16) * d.
    d = f16(b, 0)[:, None]
    qh = b[:, 2:6].copy().view("<u4")[:, 0].astype(np.int64)
    qs = b[:, 6:22].astype(np.int64)
    j = np.arange(16)
    q_lo = (qs & 15) | (bits(qh[:, None], j) << 4)
    q_hi = (qs >> 4) | (bits(qh[:, None], j + 16) << 4)
    q = np.concatenate([q_lo, q_hi], axis=1) - 16
    return q.astype(F32) * d


def ref_q5_1(b):
    # d f16 | m f16 | qh u32 | qs 16 bytes (Q5_0's placement). x = q * d + m.
    d = f16(b, 0)[:, None]
    m = f16(b, 2)[:, None]
    qh = b[:, 4:8].copy().view("<u4")[:, 0].astype(np.int64)
    qs = b[:, 8:24].astype(np.int64)
    j = np.arange(16)
    q_lo = (qs & 15) | (bits(qh[:, None], j) << 4)
    q_hi = (qs >> 4) | (bits(qh[:, None], j + 16) << 4)
    q = np.concatenate([q_lo, q_hi], axis=1)
    return q.astype(F32) * d + m


def scale_min_k4(sc, s):
    """Q4_K/Q5_K packing of 8 six-bit scales and mins in 12 bytes (per block arrays)."""
    if s < 4:
        return sc[:, s] & 63, sc[:, s + 4] & 63
    return ((sc[:, s + 4] & 15) | ((sc[:, s - 4] >> 6) << 4),
            (sc[:, s + 4] >> 4) | ((sc[:, s] >> 6) << 4))


def ref_q5_k(b):
    # d f16 | dmin f16 | scales 12 | qh 32 | qs 128. Sub-block s of 32: low 4 bits from the
    # 32-byte group s // 2 of qs (low nibbles for even s, high for odd), 5th bit = bit s of qh[l].
    # x = (d * sc) * q - (dmin * m).
    d, dmin = f16(b, 0), f16(b, 2)
    sc = b[:, 4:16].astype(np.int64)
    qh = b[:, 16:48].astype(np.int64)
    qs = b[:, 48:176].astype(np.int64)
    out = []
    for s in range(8):
        scale, mn = scale_min_k4(sc, s)
        ds = (d * scale.astype(F32))[:, None]
        ms = (dmin * mn.astype(F32))[:, None]
        group = qs[:, 32 * (s // 2):32 * (s // 2) + 32]
        low = group & 15 if s % 2 == 0 else group >> 4
        q = low + (bits(qh, s) << 4)
        out.append(ds * q.astype(F32) - ms)
    return np.concatenate(out, axis=1)


def ref_q3_k(b):
    # hmask 32 | qs 64 | scales 12 | d f16. 16 sub-blocks of 16; the sub-block's 6-bit scale has
    # its low 4 bits in byte s (s < 8, low nibble) or byte s - 8 (high nibble) and its high 2 bits
    # at bits 2*(s//4) of byte 8 + s % 4; the value is that minus 32.
    # Element 128h + 32p + 16k + l: low 2 bits at bits 2p of qs[32h + 16k + l], high bit = bit
    # 4h + p of hmask[16k + l] (set: +0, clear: -4); sub-block 8h + 2p + k. x = (d * scale) * q.
    hm = b[:, 0:32].astype(np.int64)
    qs = b[:, 32:96].astype(np.int64)
    sc = b[:, 96:108].astype(np.int64)
    d = f16(b, 108)
    out = []
    for h in range(2):
        for p in range(4):
            for k in range(2):
                s = 8 * h + 2 * p + k
                low4 = sc[:, s] & 15 if s < 8 else sc[:, s - 8] >> 4
                high2 = (sc[:, 8 + s % 4] >> (2 * (s // 4))) & 3
                scale = (low4 | (high2 << 4)) - 32
                dl = (d * scale.astype(F32))[:, None]
                q2 = (qs[:, 32 * h + 16 * k:32 * h + 16 * k + 16] >> (2 * p)) & 3
                hbit = bits(hm[:, 16 * k:16 * k + 16], 4 * h + p)
                q = q2 - np.where(hbit == 1, 0, 4)
                out.append(dl * q.astype(F32))
    return np.concatenate(out, axis=1)


def ref_q2_k(b):
    # scales 16 (low nibble scale, high nibble min) | qs 64 | d f16 | dmin f16. Element order as
    # Q3_K. x = (d * scale) * q - (dmin * min).
    sc = b[:, 0:16].astype(np.int64)
    qs = b[:, 16:80].astype(np.int64)
    d, dmin = f16(b, 80), f16(b, 82)
    out = []
    for h in range(2):
        for p in range(4):
            for k in range(2):
                s = 8 * h + 2 * p + k
                dl = (d * (sc[:, s] & 15).astype(F32))[:, None]
                ml = (dmin * (sc[:, s] >> 4).astype(F32))[:, None]
                q = (qs[:, 32 * h + 16 * k:32 * h + 16 * k + 16] >> (2 * p)) & 3
                out.append(dl * q.astype(F32) - ml)
    return np.concatenate(out, axis=1)


def ref_iq4_nl(b):
    # d f16 | qs 16 (Q4_0's nibble placement); x = d * table[q].
    d = f16(b, 0)[:, None]
    qs = b[:, 2:18].astype(np.int64)
    q = np.concatenate([qs & 15, qs >> 4], axis=1)
    return d * IQ4NL_VALUES[q].astype(F32)


def ref_iq4_xs(b):
    # d f16 | scales_h u16 | scales_l 4 | qs 128. Sub-block s: 6-bit ls = nibble s % 2 of
    # scales_l[s / 2] | bits 2s, 2s+1 of scales_h << 4; qs[16s:16s+16] as IQ4_NL's nibbles.
    # x = (d * float(ls - 32)) * table[q].
    d = f16(b, 0)
    sh = b[:, 2:4].copy().view("<u2")[:, 0].astype(np.int64)
    out = []
    for s in range(8):
        ls = ((b[:, 4 + s // 2].astype(np.int64) >> (4 * (s % 2))) & 15) | (((sh >> (2 * s)) & 3) << 4)
        dl = (d * (ls - 32).astype(F32))[:, None]
        qs = b[:, 8 + 16 * s:24 + 16 * s].astype(np.int64)
        q = np.concatenate([qs & 15, qs >> 4], axis=1)
        out.append(dl * IQ4NL_VALUES[q].astype(F32))
    return np.concatenate(out, axis=1)


REFS = {"Q5_0": ref_q5_0, "Q5_1": ref_q5_1, "Q5_K": ref_q5_k, "Q3_K": ref_q3_k, "Q2_K": ref_q2_k,
        "IQ4_NL": ref_iq4_nl, "IQ4_XS": ref_iq4_xs}


def random_blocks(rng, n, bb, scale_offsets):
    b = rng.integers(0, 256, size=(n, bb), dtype=np.uint8)
    for off in scale_offsets:
        h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32)
        h = np.where((h >> 10) & 31 == 31, h & ~np.uint32(1 << 14), h)  # exponent 31 -> 15: finite
        h[: min(n, 4)] = [0x0000, 0x8000, 0x0001, 0x7bff][: min(n, 4)]  # 0, -0, min subnormal, max
        b[:, off] = (h & 255).astype(np.uint8)
        b[:, off + 1] = (h >> 8).astype(np.uint8)
    return b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tool")
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, (block, bb, scales) in TYPES.items():
            blocks = random_blocks(rng, a.blocks, bb, scales)
            src, dst = os.path.join(tmp, name + ".bin"), os.path.join(tmp, name + ".f32")
            blocks.tofile(src)
            r = subprocess.run([a.tool, "dequant", name, src, dst], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL: {name}: block_tool: {r.stderr.strip()}")
                return 2
            got = np.fromfile(dst, dtype="<f4").reshape(a.blocks, block)
            want = REFS[name](blocks)
            assert want.dtype == F32 and want.shape == got.shape, (name, want.dtype, want.shape)
            diff = np.argwhere(got.view(np.uint32) != want.view(np.uint32))
            if len(diff):
                i, j = diff[0]
                print(f"FAIL: {name}: {len(diff)} of {got.size} values differ; first: block {i} element {j}: "
                      f"moerun {got[i, j]!r} (0x{got.view(np.uint32)[i, j]:08x}), "
                      f"reference {want[i, j]!r} (0x{want.view(np.uint32)[i, j]:08x}); "
                      f"block bytes {blocks[i].tobytes().hex()}")
                failures += 1
            else:
                print(f"PASS: {name}: {got.size} values of {a.blocks} random blocks bit-identical "
                      f"({np.count_nonzero(~np.isfinite(want))} non-finite)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
