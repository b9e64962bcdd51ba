#!/usr/bin/env python3
"""Puts the synthetic DeepSeek-LLM tokenizer (testdata/synthetic) beside a tiny test model whose
vocab is 300: its added tokens move to ids 295..299 and config.json's bos/eos point at them.
Usage: place_synthetic_tokenizer.py MODEL_DIR"""
import json
import os
import sys

src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic")
dst = sys.argv[1]
tok = json.load(open(f"{src}/tokenizer.json", encoding="utf-8"))
for a in tok["added_tokens"]:
    a["id"] -= 5
for st in tok["post_processor"]["special_tokens"].values():
    st["ids"] = [295]
json.dump(tok, open(f"{dst}/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
with open(f"{src}/tokenizer_config.json", encoding="utf-8") as f:
    open(f"{dst}/tokenizer_config.json", "w", encoding="utf-8").write(f.read())
cfg = json.load(open(f"{dst}/config.json"))
cfg["bos_token_id"], cfg["eos_token_id"] = 295, 296
json.dump(cfg, open(f"{dst}/config.json", "w"), indent=2)
