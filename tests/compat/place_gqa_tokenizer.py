#!/usr/bin/env python3
"""Puts a tokenizer of a GQA family's kind beside a tiny test model whose vocab is 300 and points
config.json's bos/eos at its special tokens.
  --kind qwen2  the synthetic byte-level BPE (tests/tokenizer/testdata/synthetic, added tokens at
                295..299) with Qwen2's Split regex pre-tokenizer (llama.cpp pre "qwen2")
  --kind olmo   the same vocabulary with GPT-2's ByteLevel regex pre-tokenizer (pre "olmo")
  --kind dbrx   the same vocabulary with the cl100k-style Split regex of OLMoE-0125's dolma2
                tokenizer (pre "dbrx")
  --kind spm    a SentencePiece-converted BPE as Mixtral's tokenizer.json has it: <unk> 0, <s> 1,
                </s> 2, <0x00>..<0xFF> at 3..258, then pieces of a small corpus; byte_fallback,
                normalizer Prepend("▁") + Replace(" ", "▁"), and merges listing every split of every
                piece by the piece's rank (transformers' SpmConverter order)
Usage: place_gqa_tokenizer.py MODEL_DIR --kind qwen2|olmo|dbrx|spm"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
DBRX_REGEX = QWEN2_REGEX.replace("|\\p{N}|", "|\\p{N}{1,3}|")
SP = "\u2581"
CORPUS = "the cat sat on the mat and the hat then ran to the tree in the heat"


def byte_level(dst, kind):
    src = os.path.join(HERE, "..", "tokenizer", "testdata", "synthetic")
    tok = json.load(open(f"{src}/tokenizer.json", encoding="utf-8"))
    for a in tok["added_tokens"]:
        a["id"] -= 5
    tok["post_processor"] = None
    if kind in ("qwen2", "dbrx"):
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX if kind == "qwen2" else DBRX_REGEX},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    else:
        tok["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                "use_regex": True}
    cfg = json.load(open(f"{src}/tokenizer_config.json", encoding="utf-8"))
    cfg["add_bos_token"] = False
    return tok, cfg, 295, 296


def spm(vocab_size):
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    chars = []
    for ch in SP + CORPUS.replace(" ", SP):
        if ch not in chars:
            chars.append(ch)
    words = [SP + w for w in CORPUS.split()]
    # Pieces by frequency of substrings of the words (longer pieces from shorter ones).
    cands = {}
    for w in words:
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + 5) + 1):
                cands[w[i:j]] = cands.get(w[i:j], 0) + 1
    multi = sorted(cands, key=lambda s: (-cands[s], len(s), s))
    room = vocab_size - len(pieces) - len(chars)
    chosen = []
    for s in multi:
        if len(chosen) >= room:
            break
        # reachable: some split into two known pieces
        known = set(chars) | set(chosen)
        if any(s[:k] in known and s[k:] in known for k in range(1, len(s))):
            chosen.append(s)
    vocab = {p: i for i, p in enumerate(pieces + chars + chosen)}
    merges = []
    for s in chosen:  # rank order = piece order
        for k in range(1, len(s)):
            if s[:k] in vocab and s[k:] in vocab:
                merges.append([s[:k], s[k:]])
    added = [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, p in enumerate(["<unk>", "<s>", "</s>"])]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": {"type": "Sequence", "normalizers": [
               {"type": "Prepend", "prepend": SP},
               {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
           "pre_tokenizer": None, "post_processor": None,
           "decoder": {"type": "Sequence", "decoders": [
               {"type": "Replace", "pattern": {"String": SP}, "content": " "},
               {"type": "ByteFallback"}, {"type": "Fuse"},
               {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                     "vocab": vocab, "merges": merges}}
    cfg = {"add_bos_token": False, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}
    return tok, cfg, 1, 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--kind", required=True, choices=["qwen2", "olmo", "dbrx", "spm"])
    a = ap.parse_args()
    cfg_path = os.path.join(a.model_dir, "config.json")
    config = json.load(open(cfg_path))
    if a.kind == "spm":
        tok, tcfg, bos, eos = spm(config["vocab_size"])
    else:
        tok, tcfg, bos, eos = byte_level(a.model_dir, a.kind)
    json.dump(tok, open(os.path.join(a.model_dir, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump(tcfg, open(os.path.join(a.model_dir, "tokenizer_config.json"), "w", encoding="utf-8"),
              ensure_ascii=False, indent=2)
    config["bos_token_id"], config["eos_token_id"] = bos, eos
    json.dump(config, open(cfg_path, "w"), indent=2)


if __name__ == "__main__":
    main()
