#!/usr/bin/env python3
"""The PyTorch CPU baseline for `moerun bench-moe`: a naive DeepSeek-V2-Lite MoE layer.

Shapes and method as described in the project's perf notes: H=2048, 64 routed experts of width
1408, top-6 softmax routing (router in f32, no renormalisation, scale 1.0), a Python loop over the
experts that received tokens (gather, SwiGLU, weighted index_add), and the 2 shared experts as one
SwiGLU MLP of width 2816. Weights are random in --dtype; every timed call gets a fresh input.
Prints one JSON object per token count (same keys as `moerun bench-moe --json`).
Run with Debian's interpreter: /usr/bin/python3 bench/torch_moe_baseline.py
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

HIDDEN, EXPERTS, TOP_K, WIDTH, SHARED = 2048, 64, 6, 1408, 2


def random_weight(rows, cols, dtype, gen):
    return (torch.randn(rows, cols, generator=gen) * 0.02).to(dtype)


class NaiveMoe:
    def __init__(self, dtype, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.router = torch.randn(EXPERTS, HIDDEN, generator=gen) / HIDDEN ** 0.5  # f32
        self.gate = [random_weight(WIDTH, HIDDEN, dtype, gen) for _ in range(EXPERTS)]
        self.up = [random_weight(WIDTH, HIDDEN, dtype, gen) for _ in range(EXPERTS)]
        self.down = [random_weight(HIDDEN, WIDTH, dtype, gen) for _ in range(EXPERTS)]
        self.shared_gate = random_weight(SHARED * WIDTH, HIDDEN, dtype, gen)
        self.shared_up = random_weight(SHARED * WIDTH, HIDDEN, dtype, gen)
        self.shared_down = random_weight(HIDDEN, SHARED * WIDTH, dtype, gen)
        self.dtype = dtype

    @staticmethod
    def mlp(x, gate, up, down):
        return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)

    @torch.no_grad()
    def __call__(self, x):  # x: [T, H] f32
        probs = F.linear(x, self.router).softmax(dim=-1)
        weights, ids = probs.topk(TOP_K, dim=-1)
        xd = x.to(self.dtype)
        out = torch.zeros_like(x)
        flat_ids = ids.flatten()
        order = flat_ids.argsort(stable=True)
        token_of = torch.arange(x.shape[0]).repeat_interleave(TOP_K)[order]
        weight_of = weights.flatten()[order]
        counts = torch.bincount(flat_ids, minlength=EXPERTS).tolist()
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            tokens = token_of[start:start + n]
            y = self.mlp(xd[tokens], self.gate[e], self.up[e], self.down[e]).float()
            out.index_add_(0, tokens, y * weight_of[start:start + n, None])
            start += n
        return out + self.mlp(xd, self.shared_gate, self.shared_up, self.shared_down).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--tokens", default="1,16,128,1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    layer = NaiveMoe(dtype)
    for t in (int(v) for v in args.tokens.split(",")):
        inputs = [torch.randn(t, HIDDEN) for _ in range(8)]
        for i in range(2):
            layer(inputs[i])
        times = []
        start = time.perf_counter()
        while (time.perf_counter() - start < args.min_time or len(times) < 3) and len(times) < 1000:
            t0 = time.perf_counter()
            layer(inputs[len(times) % len(inputs)])
            times.append(time.perf_counter() - t0)
        times.sort()
        median = times[len(times) // 2]
        print(json.dumps({"impl": "torch", "torch": torch.__version__, "dtype": args.dtype.upper(),
                          "threads": args.threads, "tokens": t, "median_ms": round(median * 1e3, 4),
                          "min_ms": round(times[0] * 1e3, 4), "tokens_per_s": round(t / median, 2),
                          "iters": len(times)}), flush=True)


if __name__ == "__main__":
    main()
