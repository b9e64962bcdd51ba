#!/usr/bin/env python3
"""Compares moerun's logits with llama.cpp's top 5 at the first generated position (stdlib only).

Usage: compare_top_logits.py MOERUN_LOGITS.safetensors LLAMA_JSON_LINE TOL

MOERUN_LOGITS.safetensors: `moerun logits` output (tensor "logits", f32 [n_tokens, vocab]); its
last row is the position after the prompt. LLAMA_JSON_LINE: one line of llama_greedy.mjs --logits
({"top5": [[id, logit], ...], ...}). Passes (exit 0) when moerun's logit of each of the 5 ids is
within TOL of llama.cpp's and, when llama.cpp's top-1 leads its second by more than 2 TOL, moerun's
argmax is the same id. Prints the largest difference and both argmaxes either way.
"""
import array
import json
import struct
import sys


def last_row(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        info = header["logits"]
        assert info["dtype"] == "F32", info
        rows, vocab = info["shape"]
        begin, end = info["data_offsets"]
        f.seek(8 + n + begin)
        data = array.array("f")
        data.frombytes(f.read(end - begin))
        if sys.byteorder != "little":
            data.byteswap()
        return data[(rows - 1) * vocab : rows * vocab]


def main():
    mine = last_row(sys.argv[1])
    top5 = json.loads(sys.argv[2])["top5"]
    tol = float(sys.argv[3])
    worst = max(abs(mine[i] - v) for i, v in top5)
    argmax = max(range(len(mine)), key=lambda i: mine[i])
    lead = top5[0][1] - top5[1][1]
    msg = (f"max |diff| over llama.cpp's top 5 {worst:.4f} (tol {tol}); argmax moerun {argmax}, "
           f"llama.cpp {top5[0][0]} (lead {lead:.4f})")
    ok = worst <= tol and (lead <= 2 * tol or argmax == top5[0][0])
    print(msg)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
