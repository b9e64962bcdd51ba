#!/usr/bin/env bash
# The default job: build moerun, generate a DeepSeek-V2-Lite-shaped MoE block (H=2048, I=1408,
# 64 routed experts, top-6, 2 shared experts, random bf16 weights) and 32 tokens of input, run
# `moerun moe-layer` on it, check the result against the double-precision reference and print
# its speed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
MOERUN=build/bin/moerun
EXAMPLE=build/example-v2-lite
if [[ ! -f $EXAMPLE/layer.safetensors ]]; then
  "$MOERUN" make-example --out "$EXAMPLE" --preset v2-lite --tokens 32 --dtype bf16
fi
"$MOERUN" moe-layer --config "$EXAMPLE/config.json" --weights "$EXAMPLE/layer.safetensors" \
  --input "$EXAMPLE/x.safetensors" --output "$EXAMPLE/y.safetensors" --check --repeat 5

# The embedded default model (models/tiny-arith: a tiny DeepSeek-V2 trained on arithmetic) answers
# prompts, then its held-out accuracy on one rank and on four in-process ranks (TP 2 x DP 2, EP, SP).
if [[ -f models/tiny-arith/model.safetensors ]]; then
  for prompt in "12+34=" "305-178=" "47*6="; do
    printf '%s' "$prompt"
    "$MOERUN" generate -p "$prompt" -n 8 2>/dev/null
  done
  "$MOERUN" eval --task models/tiny-arith/heldout.jsonl
  "$MOERUN" eval --task models/tiny-arith/heldout.jsonl --tp 2 --dp 2 --ep --sp
fi
