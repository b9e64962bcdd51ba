#!/usr/bin/env python3
"""Independent numpy reference for ggml's reference quantisers (quantize_row_*_ref, no importance
matrix), checked byte for byte against moerun's QuantizeRow (core/block_quant.h) through
tests/core/block_tool (quant mode).

For each of Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K: deterministic input blocks (Gaussian at
several scales, one big outlier, all-zero and signed-zero blocks, constant blocks of either sign,
all-negative and all-positive blocks, a largest-magnitude element that is negative, values in the
f16 subnormal range, values below ggml's GROUP_MAX_EPS, uniform, half-integer grids with rounding
ties, K-quant super-blocks whose sub-blocks differ wildly in scale, and sub-blocks that are one
pattern with random signs, so that the max-|scale| searches tie) are quantised here and by moerun;
the bytes must be identical.

The algorithms are re-expressed from ggml's ggml-quants.c (quantize_row_{q8_0,q4_0,q5_0,q5_1,q4_K,
q5_K,q6_K}_ref, make_qkx2_quants, make_qx_quants, nearest_int, get_scale_min_k4), not from moerun's
C++. ggml's reference code is plain C float arithmetic without fused multiply-add, so everything
here is numpy float32 with one rounding per operation, in C's association order (a * b * c is
(a * b) * c; an int operand is converted to float first), with every loop that accumulates in ggml
done as a sequential loop (vectorised across blocks, never a pairwise np.sum). The C conversions
are spelt out: nearest_int's 1.5 * 2^23 trick, roundf (ties away from zero), truncating
float-to-integer casts, uint8_t / int8_t wrap-around, f16 round-to-nearest-even.

usage: quant_reference.py BLOCK_TOOL [--blocks N] [--seed S]   compare against moerun
       quant_reference.py --ggml-lib libggml-base.so [...]     compare against a ggml build
                                                               (ctypes; checks this oracle)
       quant_reference.py --self-test                          hand cases and round trips
Exit 0 when every type matches, 1 on a mismatch (first differing byte printed), 2 on errors.
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np

F32 = np.float32
F64 = np.float64

# name: (elements per block, bytes per block, [(first byte, end byte, field name)])
TYPES = {
    "Q8_0": (32, 34, [(0, 2, "d"), (2, 34, "qs")]),
    "Q4_0": (32, 18, [(0, 2, "d"), (2, 18, "qs")]),
    "Q5_0": (32, 22, [(0, 2, "d"), (2, 6, "qh"), (6, 22, "qs")]),
    "Q5_1": (32, 24, [(0, 2, "d"), (2, 4, "m"), (4, 8, "qh"), (8, 24, "qs")]),
    "Q4_K": (256, 144, [(0, 2, "d"), (2, 4, "dmin"), (4, 16, "scales"), (16, 144, "qs")]),
    "Q5_K": (256, 176, [(0, 2, "d"), (2, 4, "dmin"), (4, 16, "scales"), (16, 48, "qh"),
                        (48, 176, "qs")]),
    "Q6_K": (256, 210, [(0, 128, "ql"), (128, 192, "qh"), (192, 208, "scales"), (208, 210, "d")]),
}

GROUP_MAX_EPS = F32(1e-15)  # 0x26901d7d, as the C literal 1e-15f
FLT_MAX = np.finfo(F32).max


# ---------------------------------------------------------------- C arithmetic helpers

def nearest_int(v):
    """ggml's nearest_int: (bits(f + 12582912.f) & 0x7fffff) - 0x400000 (ties to even via the add).
    Reproduces the bit trick itself, so out-of-range / non-finite inputs give C's exact result."""
    assert v.dtype == F32, v.dtype
    b = (v + F32(12582912.0)).view(np.int32).astype(np.int64)
    return (b & 0x007FFFFF) - 0x00400000


def roundf(v):
    """C roundf (half away from zero) of f32 values, as int64. |v| + 0.5 is exact in f64."""
    assert v.dtype == F32, v.dtype
    r = np.floor(np.abs(v.astype(F64)) + 0.5)
    return np.where(v < 0, -r, r).astype(np.int64)


def trunc_int(v):
    """C float-to-integer conversion (truncation toward zero), as int64."""
    assert v.dtype == F32, v.dtype
    return np.trunc(v.astype(F64)).astype(np.int64)


def as_int8(i):
    """Store an int into an int8_t (two's complement wrap)."""
    return ((i + 128) & 0xFF) - 128


def as_uint8(i):
    """Store an int into a uint8_t (wrap)."""
    return i & 0xFF


def fp16_bits(v):
    """GGML_FP32_TO_FP16: round to nearest even f16, as uint16 bits."""
    assert v.dtype == F32, v.dtype
    with np.errstate(over="ignore"):  # |v| >= 65520 -> inf, as in C
        return v.astype(np.float16).view(np.uint16)


def fp16_to_f32(h):
    """GGML_FP16_TO_FP32 (exact)."""
    return h.astype(np.uint16).view(np.float16).astype(F32)


def le16(h):
    """(B,) uint16 -> (B, 2) little-endian bytes."""
    return h.astype("<u2").view(np.uint8).reshape(-1, 2)


def le32(w):
    """(B,) integer -> (B, 4) little-endian bytes of a uint32."""
    return w.astype("<u4").view(np.uint8).reshape(-1, 4)


# ---------------------------------------------------------------- 32-element formats

def signed_absmax(x):
    """Q4_0/Q5_0: `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` from amax = max = 0."""
    amax = np.zeros(x.shape[0], F32)
    mx = np.zeros(x.shape[0], F32)
    for j in range(x.shape[1]):
        v = x[:, j]
        a = np.abs(v)
        upd = amax < a
        amax = np.where(upd, a, amax)
        mx = np.where(upd, v, mx)
    return mx


def pack_q5_low_high(xi):
    """xi (B, 32) levels 0..31 -> (qs (B, 16), qh (B,) u32): element j < 16 in the low nibble of
    qs[j] and bit j of qh, element j + 16 in the high nibble and bit j + 16."""
    x0, x1 = xi[:, :16], xi[:, 16:]
    qs = ((x0 & 0x0F) | ((x1 & 0x0F) << 4)).astype(np.uint8)
    sh = np.arange(16, dtype=np.int64)
    qh = (((x0 & 0x10) >> 4) << sh).sum(axis=1) | (((x1 & 0x10) >> 4) << (sh + 16)).sum(axis=1)
    return qs, qh  # (integer sums of distinct bits: exact)


def quant_q8_0(x):
    B = x.shape[0]
    amax = np.zeros(B, F32)
    for j in range(32):
        a = np.abs(x[:, j])
        amax = np.where(amax > a, amax, a)  # MAX(amax, fabsf(v))
    d = amax / F32(127)  # amax / ((1 << 7) - 1)
    idv = np.where(d != 0, F32(1) / d, F32(0))
    q = roundf(x * idv[:, None])  # y.qs[j] = roundf(x0) stored to int8_t
    out = np.empty((B, 34), np.uint8)
    out[:, 0:2] = le16(fp16_bits(d))
    out[:, 2:] = as_uint8(as_int8(q)).astype(np.uint8)
    return out


def symmetric_levels(x, half, top):
    """Q4_0 / Q5_0: d = max / -half (max: the signed largest |x|) and q = MIN(top, (int8_t)(x / d +
    half + 0.5)) stored into uint8_t, per block."""
    d = signed_absmax(x) / F32(-half)
    idv = np.where(d != 0, F32(1) / d, F32(0))
    xq = x * idv[:, None]
    return d, as_uint8(np.minimum(top, as_int8(trunc_int(xq + F32(half + 0.5)))))


def quant_q4_0(x):
    B = x.shape[0]
    d, xi = symmetric_levels(x, 8, 15)
    out = np.empty((B, 18), np.uint8)
    out[:, 0:2] = le16(fp16_bits(d))
    out[:, 2:] = as_uint8(xi[:, :16] | (xi[:, 16:] << 4)).astype(np.uint8)
    return out


def quant_q5_0(x):
    B = x.shape[0]
    d, xi = symmetric_levels(x, 16, 31)
    qs, qh = pack_q5_low_high(xi)
    out = np.empty((B, 22), np.uint8)
    out[:, 0:2] = le16(fp16_bits(d))
    out[:, 2:6] = le32(qh)
    out[:, 6:] = qs
    return out


def quant_q5_1(x):
    B = x.shape[0]
    mn = np.full(B, FLT_MAX, F32)
    mx = np.full(B, -FLT_MAX, F32)
    for j in range(32):
        v = x[:, j]
        mn = np.where(v < mn, v, mn)
        mx = np.where(v > mx, v, mx)
    d = (mx - mn) / F32(31)  # / ((1 << 5) - 1)
    idv = np.where(d != 0, F32(1) / d, F32(0))
    xq = (x - mn[:, None]) * idv[:, None]
    xi = as_uint8(trunc_int(xq + F32(0.5)))  # (uint8_t)(x0 + 0.5f)
    qs, qh = pack_q5_low_high(xi)
    out = np.empty((B, 24), np.uint8)
    out[:, 0:2] = le16(fp16_bits(d))
    out[:, 2:4] = le16(fp16_bits(mn))
    out[:, 4:8] = le32(qh)
    out[:, 8:] = qs
    return out


# ---------------------------------------------------------------- K-quant helpers

def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep):
    """ggml's make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep,
    use_mad = false) for every row of x / w (R, n) at once. Returns (scale (R,), the_min (R,),
    L (R, n) int64). The loops over elements are sequential; the loop over candidate scales is
    sequential too, because an accepted candidate replaces `min`, which the next candidates use."""
    R, n = x.shape
    nmax_f, rmin, rdelta = F32(nmax), F32(rmin), F32(rdelta)
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        xi = x[:, i]
        mn = np.where(xi < mn, xi, mn)
        mx = np.where(xi > mx, xi, mx)
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * xi
    mn = np.where(mn > 0, F32(0), mn)  # if (min > 0) min = 0;
    flat = mx == mn  # -> L = 0, *the_min = -min, return 0
    flat_min = -mn

    iscale = nmax_f / (mx - mn)
    scale = F32(1) / iscale
    L = np.empty((R, n), np.int64)
    best_error = np.zeros(R, F32)
    for i in range(n):
        li = np.clip(nearest_int(iscale * (x[:, i] - mn)), 0, nmax)
        L[:, i] = li
        diff = scale * li.astype(F32) + mn - x[:, i]  # ((scale * L) + min) - x
        diff = diff * diff
        best_error = best_error + w[:, i] * diff
    Laux = np.empty((R, n), np.int64)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + nmax_f) / (mx - mn)
        sum_l = np.zeros(R, F32)
        sum_l2 = np.zeros(R, F32)
        sum_xl = np.zeros(R, F32)
        for i in range(n):
            li = np.clip(nearest_int(iscale * (x[:, i] - mn)), 0, nmax)
            Laux[:, i] = li
            lf = li.astype(F32)
            wi = w[:, i]
            sum_l = sum_l + wi * lf
            sum_l2 = sum_l2 + wi * lf * lf  # (w * l) * l
            sum_xl = sum_xl + wi * lf * x[:, i]  # (w * l) * x
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = np.where(pos, F32(0), this_min)
        this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
        cur_error = np.zeros(R, F32)
        for i in range(n):
            diff = this_scale * Laux[:, i].astype(F32) + this_min - x[:, i]
            diff = diff * diff
            cur_error = cur_error + w[:, i] * diff
        take = (D > 0) & (cur_error < best_error)
        L = np.where(take[:, None], Laux, L)
        best_error = np.where(take, cur_error, best_error)
        scale = np.where(take, this_scale, scale)
        mn = np.where(take, this_min, mn)
    the_min = -mn
    scale = np.where(flat, F32(0), scale)
    the_min = np.where(flat, flat_min, the_min)
    L = np.where(flat[:, None], 0, L)
    return scale, the_min, L


def get_scale_min_k4(j, q):
    """ggml's get_scale_min_k4 on the (B, 12) packed scales: (scale, min) of sub-block j."""
    if j < 4:
        return q[:, j] & 63, q[:, j + 4] & 63
    return ((q[:, j + 4] & 0xF) | ((q[:, j - 4] >> 6) << 4),
            (q[:, j + 4] >> 4) | ((q[:, j] >> 6) << 4))


def fit_k_quant(x, nmax, rmin, nstep):
    """The shared part of quantize_row_q4_K_ref / q5_K_ref: returns (d bits, dmin bits,
    scales (B, 12) int64, L (B, 256) int64)."""
    B = x.shape[0]
    xs = x.reshape(B * 8, 32)
    sum_x2 = np.zeros(B * 8, F32)
    for l in range(32):
        sum_x2 = sum_x2 + xs[:, l] * xs[:, l]
    av_x = np.sqrt(sum_x2 / F32(32))
    weights = av_x[:, None] + np.abs(xs)
    sc_f, mins_f, Lfit = make_qkx2_quants(xs, weights, nmax, rmin, 0.1, nstep)
    scales = sc_f.reshape(B, 8)
    mins = mins_f.reshape(B, 8)
    Lfit = Lfit.reshape(B, 256)
    max_scale = np.zeros(B, F32)
    max_min = np.zeros(B, F32)
    for j in range(8):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
    inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    ls = np.minimum(63, as_uint8(nearest_int(inv_scale[:, None] * scales)))  # uint8_t ls = ...
    lm = np.minimum(63, as_uint8(nearest_int(inv_min[:, None] * mins)))
    sc = np.zeros((B, 12), np.int64)
    for j in range(8):
        if j < 4:
            sc[:, j] = ls[:, j]
            sc[:, j + 4] = lm[:, j]
        else:
            sc[:, j + 4] = (ls[:, j] & 0xF) | ((lm[:, j] & 0xF) << 4)
            sc[:, j - 4] |= (ls[:, j] >> 4) << 6
            sc[:, j] |= (lm[:, j] >> 4) << 6
    sc = as_uint8(sc)
    d_bits = fp16_bits(max_scale / F32(63))
    dmin_bits = fp16_bits(max_min / F32(63))
    d_all = fp16_to_f32(d_bits)
    dmin_all = fp16_to_f32(dmin_bits)
    L = Lfit.copy()
    for j in range(8):
        s, m = get_scale_min_k4(j, sc)
        d = d_all * s.astype(F32)
        dm = dmin_all * m.astype(F32)
        xj = x[:, 32 * j:32 * j + 32]
        lj = np.clip(nearest_int((xj + dm[:, None]) / d[:, None]), 0, nmax)
        keep = d == 0  # if (!d) continue; -> the levels of make_qkx2_quants stay
        L[:, 32 * j:32 * j + 32] = np.where(keep[:, None], Lfit[:, 32 * j:32 * j + 32], lj)
    return d_bits, dmin_bits, sc, L


def quant_q4_k(x):
    B = x.shape[0]
    with np.errstate(all="ignore"):
        d_bits, dmin_bits, sc, L = fit_k_quant(x, 15, -1.0, 20)
    out = np.empty((B, 144), np.uint8)
    out[:, 0:2] = le16(d_bits)
    out[:, 2:4] = le16(dmin_bits)
    out[:, 4:16] = sc
    for g in range(4):  # q[l] = L[j + l] | (L[j + l + 32] << 4), j = 64 g
        lo, hi = L[:, 64 * g:64 * g + 32], L[:, 64 * g + 32:64 * g + 64]
        out[:, 16 + 32 * g:48 + 32 * g] = as_uint8(lo | (hi << 4))
    return out


def quant_q5_k(x):
    B = x.shape[0]
    with np.errstate(all="ignore"):
        d_bits, dmin_bits, sc, L = fit_k_quant(x, 31, -0.5, 15)
    out = np.empty((B, 176), np.uint8)
    out[:, 0:2] = le16(d_bits)
    out[:, 2:4] = le16(dmin_bits)
    out[:, 4:16] = sc
    qh = np.zeros((B, 32), np.int64)
    for g in range(4):
        l1 = L[:, 64 * g:64 * g + 32]
        l2 = L[:, 64 * g + 32:64 * g + 64]
        qh |= np.where(l1 > 15, 1 << (2 * g), 0)  # m1 = 1 << 2g
        qh |= np.where(l2 > 15, 2 << (2 * g), 0)  # m2 = 2 << 2g
        l1 = np.where(l1 > 15, l1 - 16, l1)
        l2 = np.where(l2 > 15, l2 - 16, l2)
        out[:, 48 + 32 * g:80 + 32 * g] = as_uint8(l1 | (l2 << 4))
    out[:, 16:48] = qh
    return out


def make_qx_quants(x, nmax):
    """ggml's make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL) for every row of x (R, n):
    weights x * x. Returns (scale (R,), L (R, n) int64 in [0, 2 nmax))."""
    R, n = x.shape
    nmax_f = F32(nmax)
    amax = np.zeros(R, F32)
    mx = np.zeros(R, F32)
    for i in range(n):
        ax = np.abs(x[:, i])
        upd = ax > amax
        amax = np.where(upd, ax, amax)
        mx = np.where(upd, x[:, i], mx)
    zero = amax < GROUP_MAX_EPS

    def levels_and_sums(iscale):
        ls = np.empty((R, n), np.int64)
        sumlx = np.zeros(R, F32)
        suml2 = np.zeros(R, F32)
        for i in range(n):
            li = np.clip(nearest_int(iscale * x[:, i]), -nmax, nmax - 1)
            ls[:, i] = li
            xi = x[:, i]
            w = xi * xi
            lf = li.astype(F32)
            sumlx = sumlx + w * xi * lf  # (w * x) * l
            suml2 = suml2 + w * lf * lf  # (w * l) * l
        return ls, sumlx, suml2

    iscale = F32(-nmax) / mx  # -nmax / max: the int negated, then converted
    l0, sumlx, suml2 = levels_and_sums(iscale)
    L = l0 + nmax
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(nmax_f + F32(0.1) * F32(step)) / mx
        ls, sumlx, suml2 = levels_and_sums(iscale)
        take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(take[:, None], ls + nmax, L)
        new_scale = sumlx / suml2
        scale = np.where(take, new_scale, scale)
        best = np.where(take, new_scale * sumlx, best)
    scale = np.where(zero, F32(0), scale)
    L = np.where(zero[:, None], 0, L)
    return scale, L


def quant_q6_k(x):
    B = x.shape[0]
    with np.errstate(all="ignore"):
        sc_f, Lfit = make_qx_quants(x.reshape(B * 16, 16), 32)
        scales = sc_f.reshape(B, 16)
        Lfit = Lfit.reshape(B, 256)
        max_scale = np.zeros(B, F32)
        max_abs_scale = np.zeros(B, F32)
        for ib in range(16):
            a = np.abs(scales[:, ib])
            upd = a > max_abs_scale
            max_abs_scale = np.where(upd, a, max_abs_scale)
            max_scale = np.where(upd, scales[:, ib], max_scale)
        zero = max_abs_scale < GROUP_MAX_EPS  # memset(&y[i], 0, ...), d = fp16(0)
        iscale = F32(-128) / max_scale
        d_bits = fp16_bits(F32(1) / iscale)
        sc = as_int8(np.minimum(127, nearest_int(iscale[:, None] * scales)))  # int8_t scales
        d_all = fp16_to_f32(d_bits)
        L = Lfit.copy()
        for j in range(16):
            d = d_all * sc[:, j].astype(F32)
            xj = x[:, 16 * j:16 * j + 16]
            lj = np.clip(nearest_int(xj / d[:, None]), -32, 31) + 32
            L[:, 16 * j:16 * j + 16] = np.where((d == 0)[:, None], Lfit[:, 16 * j:16 * j + 16], lj)
    out = np.empty((B, 210), np.uint8)
    for h in range(2):
        L0 = L[:, 128 * h:128 * h + 32]
        L1 = L[:, 128 * h + 32:128 * h + 64]
        L2 = L[:, 128 * h + 64:128 * h + 96]
        L3 = L[:, 128 * h + 96:128 * h + 128]
        out[:, 64 * h:64 * h + 32] = as_uint8((L0 & 0xF) | ((L2 & 0xF) << 4))
        out[:, 64 * h + 32:64 * h + 64] = as_uint8((L1 & 0xF) | ((L3 & 0xF) << 4))
        out[:, 128 + 32 * h:160 + 32 * h] = as_uint8(
            (L0 >> 4) | ((L1 >> 4) << 2) | ((L2 >> 4) << 4) | ((L3 >> 4) << 6))
    out[:, 192:208] = as_uint8(sc)
    out[:, 208:210] = le16(d_bits)
    out[zero] = 0
    return out


QUANT = {"Q8_0": quant_q8_0, "Q4_0": quant_q4_0, "Q5_0": quant_q5_0, "Q5_1": quant_q5_1,
         "Q4_K": quant_q4_k, "Q5_K": quant_q5_k, "Q6_K": quant_q6_k}


def quantize(name, x):
    """x: (B, block) f32 -> (B, block bytes) uint8."""
    assert x.dtype == F32 and x.ndim == 2 and x.shape[1] == TYPES[name][0]
    with np.errstate(all="ignore"):
        y = QUANT[name](x)
    assert y.dtype == np.uint8 and y.shape == (x.shape[0], TYPES[name][1]), (name, y.dtype, y.shape)
    return y


# ---------------------------------------------------------------- dequantisers (self-test only)

def _f16(b, off):
    return fp16_to_f32(b[:, off:off + 2].copy().view("<u2")[:, 0])


def _q5_levels(qs, qh):
    j = np.arange(16)
    lo = (qs & 15) | (((qh[:, None] >> j) & 1) << 4)
    hi = (qs >> 4) | (((qh[:, None] >> (j + 16)) & 1) << 4)
    return np.concatenate([lo, hi], axis=1)


def dequantize(name, b):
    """(B, bytes) -> (B, block) f32 values, from the layouts (for round-trip checks)."""
    b = b.astype(np.int64)
    if name == "Q8_0":
        return _f16(b.astype(np.uint8), 0)[:, None] * as_int8(b[:, 2:]).astype(F32)
    if name == "Q4_0":
        q = np.concatenate([b[:, 2:] & 15, b[:, 2:] >> 4], axis=1) - 8
        return _f16(b.astype(np.uint8), 0)[:, None] * q.astype(F32)
    if name in ("Q5_0", "Q5_1"):
        off = 2 if name == "Q5_0" else 4
        qh = b[:, off:off + 4].astype(np.uint8).copy().view("<u4")[:, 0].astype(np.int64)
        q = _q5_levels(b[:, off + 4:off + 20], qh)
        d = _f16(b.astype(np.uint8), 0)[:, None]
        if name == "Q5_0":
            return d * (q - 16).astype(F32)
        return d * q.astype(F32) + _f16(b.astype(np.uint8), 2)[:, None]
    if name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(b.astype(np.uint8), 0), _f16(b.astype(np.uint8), 2)
        sc = b[:, 4:16]
        qs = b[:, 16:144] if name == "Q4_K" else b[:, 48:176]
        out = []
        for s in range(8):
            scale, mn = get_scale_min_k4(s, sc)
            grp = qs[:, 32 * (s // 2):32 * (s // 2) + 32]
            q = grp & 15 if s % 2 == 0 else grp >> 4
            if name == "Q5_K":
                q = q | (((b[:, 16:48] >> s) & 1) << 4)
            out.append((d * scale.astype(F32))[:, None] * q.astype(F32) - (dmin * mn.astype(F32))[:, None])
        return np.concatenate(out, axis=1)
    if name == "Q6_K":
        d = _f16(b.astype(np.uint8), 208)
        sc = as_int8(b[:, 192:208])
        y = np.empty((b.shape[0], 256), F32)
        for h in range(2):
            ql = b[:, 64 * h:64 * h + 64]
            qh = b[:, 128 + 32 * h:160 + 32 * h]
            qq = [(ql[:, 0:32] & 15) | (((qh >> 0) & 3) << 4), (ql[:, 32:64] & 15) | (((qh >> 2) & 3) << 4),
                  (ql[:, 0:32] >> 4) | (((qh >> 4) & 3) << 4), (ql[:, 32:64] >> 4) | (((qh >> 6) & 3) << 4)]
            for p in range(4):
                for l in range(32):
                    e = 128 * h + 32 * p + l
                    y[:, e] = d * sc[:, e // 16].astype(F32) * (qq[p][:, l] - 32).astype(F32)
        return y
    raise KeyError(name)


# ---------------------------------------------------------------- inputs

def _gauss(sigma):
    return lambda rng, n: rng.normal(0.0, sigma, n)


def _outlier(rng, n):
    x = rng.normal(0.0, 1.0, n)
    x[rng.integers(n)] = rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(1.5, 3.0)
    return x


def _signed_zeros(rng, n):
    return np.where(rng.random(n) < 0.5, -0.0, 0.0)


def _max_negative(rng, n):
    x = rng.normal(0.0, 1.0, n)
    k = np.argmax(np.abs(x))
    x[k] = -1.5 * abs(x[k])
    return x


def _ties(rng, n):
    """Half-integers with |x| max exactly 127 (Q8_0's id = 1: exact .5 ties for roundf), and
    other exact grids for the rest."""
    x = rng.integers(-254, 255, n) / 2.0
    x[rng.integers(n)] = rng.choice([-127.0, 127.0])
    return x * rng.choice([1.0, 0.25, 1.0 / 16])


def _mixed(rng, n):
    """Chunks of 16 with wildly different scales (K-quant sub-blocks whose 6-bit / int8 scale
    rounds to 0, tiny offsets, zero and constant chunks)."""
    x = np.empty(n)
    for c in range(0, n, 16):
        kind = rng.integers(6)
        if kind == 0:
            x[c:c + 16] = 0.0
        elif kind == 1:
            x[c:c + 16] = rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-3, 1)
        elif kind == 2:
            x[c:c + 16] = rng.normal(0.0, 10 ** rng.uniform(-5, 2), 16)
        elif kind == 3:
            x[c:c + 16] = rng.normal(0.0, 1.0, 16) + rng.uniform(-5, 5)
        else:
            x[c:c + 16] = rng.normal(0.0, 1.0, 16)
    return x


def _mirrored(rng, n):
    """One 16-value pattern repeated with random signs: every sub-block's |scale| ties, so the
    first-wins order of the max searches (and the sign it picks) matters."""
    p = rng.normal(0.0, 1.0, 16)
    signs = rng.choice([-1.0, 1.0], n // 16)
    signs[:2] = rng.permutation([-1.0, 1.0])
    return (signs[:, None] * p[None, :]).reshape(n)


KINDS = [
    ("gauss 1e-3", _gauss(1e-3)),
    ("gauss 1", _gauss(1.0)),
    ("gauss 100", _gauss(100.0)),
    ("gauss 1e4", _gauss(1e4)),
    ("one outlier", _outlier),
    ("zeros", lambda rng, n: np.zeros(n)),
    ("signed zeros", _signed_zeros),
    ("constant +", lambda rng, n: np.full(n, 10 ** rng.uniform(-3, 2))),
    ("constant -", lambda rng, n: np.full(n, -(10 ** rng.uniform(-3, 2)))),
    ("all negative", lambda rng, n: -np.abs(rng.normal(0.0, 1.0, n)) - rng.uniform(0, 2)),
    ("all positive", lambda rng, n: np.abs(rng.normal(0.0, 1.0, n)) + rng.uniform(0, 2)),
    ("max negative", _max_negative),
    ("f16 subnormal range", lambda rng, n: rng.normal(0.0, 10 ** rng.uniform(-7, -4.5), n)),
    ("below GROUP_MAX_EPS", lambda rng, n: rng.normal(0.0, 10 ** rng.uniform(-17, -13.5), n)),
    ("uniform", lambda rng, n: rng.uniform(-rng.uniform(0, 3), rng.uniform(0, 3), n)),
    ("ties", _ties),
    ("mixed sub-blocks", _mixed),
    ("mirrored sub-blocks", _mirrored),
]


def make_inputs(name, nblocks, seed):
    """(nblocks, block) f32 inputs for type `name`; block i is of kind i % len(KINDS). For the
    32-element types the 16-element chunks of _mixed / _mirrored are just two halves."""
    block = TYPES[name][0]
    rng = np.random.default_rng([seed, list(TYPES).index(name)])
    x = np.empty((nblocks, block), F32)
    for i in range(nblocks):
        x[i] = KINDS[i % len(KINDS)][1](rng, block).astype(F32)
    return x


# ---------------------------------------------------------------- comparison

def compare(name, x, got, want, other):
    """Print PASS or the first differing byte; return True when identical."""
    diff = np.argwhere(got != want)
    if not len(diff):
        print(f"PASS: {name}: {x.shape[0]} blocks identical")
        return True
    i, off = diff[0]
    field = next(f for a, e, f in TYPES[name][2] if a <= off < e)
    bad_blocks = len(np.unique(diff[:, 0]))
    print(f"FAIL: {name}: {bad_blocks} of {x.shape[0]} blocks differ; first: block {i} "
          f"(input kind '{KINDS[i % len(KINDS)][0]}') byte {off} (field {field}): {other} "
          f"0x{got[i, off]:02x}, reference 0x{want[i, off]:02x}")
    print(f"  {other} block:    {got[i].tobytes().hex()}")
    print(f"  reference block: {want[i].tobytes().hex()}")
    print("  input values: [" + ", ".join(repr(float(v)) for v in x[i]) + "]")
    return False


def run_tool(tool, name, x, tmp):
    src, dst = os.path.join(tmp, name + ".f32"), os.path.join(tmp, name + ".bin")
    x.astype("<f4").tofile(src)
    r = subprocess.run([tool, "quant", name, src, dst], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"block_tool exited {r.returncode}: {r.stderr.strip()}")
    got = np.fromfile(dst, dtype=np.uint8)
    if got.size != x.shape[0] * TYPES[name][1]:
        raise RuntimeError(f"block_tool wrote {got.size} bytes, expected {x.shape[0] * TYPES[name][1]}")
    return got.reshape(x.shape[0], TYPES[name][1])


def run_ggml(lib, name, x):
    fn = getattr(lib, f"quantize_row_{name.lower().replace('_k', '_K')}_ref")
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    xc = np.ascontiguousarray(x, dtype=F32)
    y = np.zeros((x.shape[0], TYPES[name][1]), np.uint8)
    fn(xc.ctypes.data, y.ctypes.data, xc.size)
    return y


# ---------------------------------------------------------------- self-test

def self_test(seed, nblocks):
    ok = True
    checks = 0

    def check(what, cond):
        nonlocal ok, checks
        checks += 1
        if not cond:
            print(f"SELF-TEST FAIL: {what}")
            ok = False

    def a32(*v):
        return np.array(v, F32)

    # C helpers.
    check("nearest_int ties to even",
          list(nearest_int(a32(0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999998, 0.0, -0.0)))
          == [0, 2, 2, 0, -2, -2, 2, 0, 0])
    check("roundf ties away", list(roundf(a32(0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -126.5)))
          == [1, 2, 3, -1, -3, 0, -127])
    check("trunc", list(trunc_int(a32(0.99, -0.99, 16.5, -3.5))) == [0, 0, 16, -3])
    check("wraps", list(as_uint8(np.array([-1, 256, 63]))) == [255, 0, 63]
          and list(as_int8(np.array([128, -129, 127]))) == [-128, 127, 127])
    check("fp16 RNE", list(fp16_bits(a32(1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -25, 3 * 2 ** -25, 65519.0,
                                         65520.0, -0.0, 0.5, -4.0)))
          == [0x3C00, 0x3C02, 0x0000, 0x0002, 0x7BFF, 0x7C00, 0x8000, 0x3800, 0xC400])
    check("constants", [int(F32(c).view(np.uint32)) for c in (0.1, 1e-15, 8.5, 16.5, 12582912.0)]
          == [0x3DCCCCCD, 0x26901D7D, 0x41080000, 0x41840000, 0x4B400000])

    # Hand cases (bytes worked out from ggml's algorithm by hand).
    j = np.arange(32)

    def q(name, values):
        return quantize(name, np.asarray(values, F32).reshape(1, -1))[0].tobytes()

    jj = bytes(int(v) | (int(v) << 4) for v in range(16))
    # Q5_1, x_j = j/2 - 4: min -4, d = 15.5/31 = 0.5, level j.
    check("Q5_1 ramp", q("Q5_1", j * 0.5 - 4) == bytes.fromhex("003800c40000ffff") + jj)
    # Q5_0, x_j = (j - 16)/2: max = -8 (j = 0), d = 0.5, level j.
    check("Q5_0 ramp", q("Q5_0", (j - 16) * 0.5) == bytes.fromhex("00380000ffff") + jj)
    # Q4_0, x_j = (j % 16 - 8)/4: max = -2, d = 0.25, level j % 16.
    check("Q4_0 ramp", q("Q4_0", (j % 16 - 8) * 0.25) == bytes.fromhex("0034") + jj)
    # Zero blocks: Q4_0's d = +0 / -8 = -0 (0x8000) with every level 8; Q5_0 level 16.
    check("Q4_0 zeros", q("Q4_0", np.zeros(32)) == bytes.fromhex("0080") + b"\x88" * 16)
    check("Q5_0 zeros", q("Q5_0", np.zeros(32)) == bytes.fromhex("0080ffffffff") + b"\x00" * 16)
    check("Q5_1 zeros", q("Q5_1", np.zeros(32)) == b"\x00" * 24)
    check("Q8_0 zeros", q("Q8_0", np.zeros(32)) == b"\x00" * 34)
    for name in ("Q4_K", "Q5_K", "Q6_K"):
        check(f"{name} zeros", q(name, np.zeros(256)) == b"\x00" * TYPES[name][1])
    # Q8_0 with amax 127: d = 1, id = 1, roundf ties away from zero.
    v = np.zeros(32)
    v[:8] = [127, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5, 3.49]
    check("Q8_0 ties",
          q("Q8_0", v) == bytes.fromhex("003c") + bytes([127, 3, 253, 1, 255, 2, 129, 3]) + b"\x00" * 24)
    # Q5_1 constant: d = 0, m = the constant, levels 0.
    check("Q5_1 constant", q("Q5_1", np.full(32, -4.0)) == bytes.fromhex("0000" "00c4") + b"\x00" * 20)
    # Q4_K, every sub-block x_l = l % 16: exact fit scale 1, min -0; ls = 63, lm = 0;
    # d = fp16(1/63) = 0x2410, dmin = 0; scales bytes 0..3 = 63 | 3 << 6, 4..7 = 0, 8..11 = 15.
    check("Q4_K ramp", q("Q4_K", np.arange(256) % 16)
          == bytes.fromhex("1024" "0000" "ffffffff" "00000000" "0f0f0f0f") + (jj * 2) * 4)
    # Q5_K, x_l = l % 32: the same with nmax 31 (fp16(1/63) again), level l: low nibbles
    # l % 16 | (l % 16) << 4, and bit s of qh[l] set for l >= 16 (all 8 sub-blocks).
    check("Q5_K ramp", q("Q5_K", np.arange(256) % 32)
          == bytes.fromhex("1024" "0000" "ffffffff" "00000000" "0f0f0f0f") + b"\x00" * 16 + b"\xff" * 16
          + (jj * 2) * 4)

    print(f"self-test: {checks} helper and hand-case checks done")

    # Round trips on the generated inputs: dequantised values within a few steps of the input
    # (a layout or level error would be far off), and a small relative RMS error on Gaussians.
    nmax = {"Q8_0": 127, "Q4_0": 8, "Q5_0": 16, "Q5_1": 31, "Q4_K": 15, "Q5_K": 31, "Q6_K": 32}
    rms_limit = {"Q8_0": 0.01, "Q4_0": 0.15, "Q5_0": 0.08, "Q5_1": 0.06, "Q4_K": 0.12, "Q5_K": 0.06,
                 "Q6_K": 0.03}
    for name in TYPES:
        x = make_inputs(name, nblocks, seed)
        y = quantize(name, x)
        check(f"{name} deterministic", np.array_equal(x, make_inputs(name, nblocks, seed)))
        xr = dequantize(name, y)
        span = np.maximum(np.abs(x).max(axis=1), x.max(axis=1) - x.min(axis=1)).astype(F64)
        step = span / nmax[name]
        # Blocks whose scale lands in the f16 subnormal range lose precision: allow for the f16
        # quantum 2^-24 times the largest integer scale and level.
        slack = 2.0 ** -24 * nmax[name] * {"Q4_K": 63, "Q5_K": 63, "Q6_K": 128}.get(name, 1)
        err = np.abs(xr.astype(F64) - x.astype(F64)).max(axis=1)
        ratio = err / (2 * step + slack)
        worst = int(np.argmax(ratio))
        check(f"{name} round trip: block {worst} ({KINDS[worst % len(KINDS)][0]}) max error "
              f"{err[worst]:.3g} vs step {step[worst]:.3g}", ratio[worst] <= 1.0)
        g = np.array([KINDS[i % len(KINDS)][0] == "gauss 1" for i in range(nblocks)])
        rel = np.sqrt(((xr[g] - x[g]).astype(F64) ** 2).mean() / (x[g].astype(F64) ** 2).mean())
        check(f"{name} Gaussian relative RMS error {rel:.4f}", rel < rms_limit[name])
        print(f"self-test: {name}: {nblocks} blocks, worst max error / (2 steps + f16 slack) "
              f"{ratio[worst]:.2f}, "
              f"Gaussian relative RMS error {rel:.4f}")
    print("SELF-TEST PASS" if ok else "SELF-TEST FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tool", nargs="?", help="block_tool binary (quant mode)")
    ap.add_argument("--blocks", type=int, default=100 * len(KINDS),
                    help=f"blocks per type (default {100 * len(KINDS)}: 100 of each input kind)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--self-test", action="store_true", help="check this reference on its own")
    ap.add_argument("--ggml-lib", help="compare against a ggml shared library (libggml-base.so) "
                                       "instead of block_tool")
    a = ap.parse_args()
    if a.self_test:
        return self_test(a.seed, a.blocks)
    if (a.tool is None) == (a.ggml_lib is None):
        ap.error("give exactly one of TOOL, --ggml-lib, or use --self-test")
    lib = None
    if a.ggml_lib:
        try:
            lib = ctypes.CDLL(a.ggml_lib)
        except OSError as e:
            print(f"ERROR: {e}")
            return 2
    other = "ggml" if lib else "moerun"
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in TYPES:
            x = make_inputs(name, a.blocks, a.seed)
            try:
                got = run_ggml(lib, name, x) if lib else run_tool(a.tool, name, x, tmp)
            except (RuntimeError, OSError, AttributeError) as e:
                print(f"ERROR: {name}: {e}")
                return 2
            if not compare(name, x, got, quantize(name, x), other):
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
