#!/usr/bin/env bash
# One GQA MoE family through GGUF (ARCH = qwen2_moe, qwen3_moe, olmoe or mixtral; model/gguf_gqa.h):
# a tiny random HF checkpoint (tools/make_test_model.py) with a tokenizer of the family's kind
# (tests/compat/place_gqa_tokenizer.py: Qwen2 regex, GPT-2 regex, SentencePiece-style) is written
# by `moerun quantize` as llama.cpp's architecture, then
#  - F32 GGUF: logits bitwise equal to the HF checkpoint's, decode too (the independent oracle is
#    the HF path, itself checked against the float64 reference by gqa_family_test.sh);
#  - Q8_0 GGUF: every matrix (embeddings and lm_head too) in Q8_0: max |diff| <= 0.05 x max |HF
#    logits| and argmax agreement >= 0.85 (router near-ties of the tiny random model may flip);
#  - the GGUF's tokenizer (tokenizer.ggml.*) gives the HF tokenizer.json's ids on fixed texts, and
#    generate / inspect / --tp 2 work on the file; tied embeddings stay bitwise;
#  - configs llama.cpp cannot represent are refused by quantize naming the field; malformed files
#    (a missing key, a mistyped key, a tensor shape that contradicts the metadata) fail with an
#    error naming the key or tensor.
# llama.cpp's own reading of these files: tests/compat/llama_cpp_gqa_test.sh.
# Usage: MOERUN=... gguf_gqa_test.sh ARCH
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
ARCH=${1:?usage: gguf_gqa_test.sh qwen2_moe|qwen3_moe|olmoe|mixtral}
case $ARCH in
  qwen2_moe) GARCH=qwen2moe KIND=qwen2 EXTRA=(--qwen-mlp-only-layers "") ;;
  qwen3_moe) GARCH=qwen3moe KIND=qwen2 EXTRA=() ;;
  olmoe) GARCH=olmoe KIND=olmo EXTRA=(--kv-heads 8) ;;
  mixtral) GARCH=llama KIND=spm EXTRA=() ;;
  *) echo "unknown ARCH $ARCH"; exit 2 ;;
esac
TOKENS=5,17,3,99,42,7,8,200,1,0,33,150,12,13,14,15
TEXTS=("the cat sat on the mat" "Hello, world! 123 it's  the heat" "tree hat then ran" "ünïcödé 日本 x"
  "n=1234567;  ok?")

d="$WORK/hf"
$PY "$ROOT/tools/make_test_model.py" "$d" --arch "$ARCH" "${EXTRA[@]}" >/dev/null 2>&1
$PY "$ROOT/tests/compat/place_gqa_tokenizer.py" "$d" --kind "$KIND"
"$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$WORK/hf.logits" --precision f32 2>/dev/null
"$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$WORK/hf.decode" --decode --precision f32 2>/dev/null

for type in f32 q8_0; do
  f="$WORK/m-$type.gguf"
  if ! "$MOERUN" quantize -m "$d" -o "$f" --type "$type" 2>"$WORK/err"; then
    fail "$ARCH $type: quantize: $(cat "$WORK/err")"
    continue
  fi
  arch=$("$MOERUN" inspect -m "$f" 2>/dev/null | grep -F '| general.architecture |' | cut -d'|' -f4 | tr -d ' "')
  if [[ $arch == "$GARCH" ]]; then pass "$ARCH $type: general.architecture $arch"; else fail "$ARCH $type: architecture '$arch'"; fi
  "$MOERUN" logits -m "$f" --tokens "$TOKENS" -o "$WORK/$type.logits" --precision f32 2>"$WORK/err" || fail "$ARCH $type logits: $(tail -1 "$WORK/err")"
  if [[ $type == f32 ]]; then
    if cmp -s "$WORK/f32.logits" "$WORK/hf.logits"; then pass "$ARCH F32 GGUF logits bitwise = HF"; else fail "$ARCH F32 GGUF logits differ from HF: $(compare "$WORK/f32.logits" "$WORK/hf.logits" 0 1)"; fi
    "$MOERUN" logits -m "$f" --tokens "$TOKENS" -o "$WORK/f32.decode" --decode --precision f32 2>/dev/null
    if cmp -s "$WORK/f32.decode" "$WORK/hf.decode"; then pass "$ARCH F32 GGUF decode bitwise = HF"; else fail "$ARCH F32 GGUF decode differs"; fi
  elif msg=$(compare "$WORK/q8_0.logits" "$WORK/hf.logits" 0.05 0.85); then
    pass "$ARCH Q8_0 GGUF vs HF f32: $msg"
  else
    fail "$ARCH Q8_0 GGUF vs HF f32: $msg"
  fi
done

f="$WORK/m-f32.gguf"
for text in "${TEXTS[@]}"; do
  want=$("$MOERUN" tokenize -m "$d" -p "$text" 2>/dev/null)
  got=$("$MOERUN" tokenize -m "$f" -p "$text" 2>/dev/null)
  if [[ -n $want && $got == "$want" ]]; then pass "$ARCH tokenizer.ggml '$text': $got"; else fail "$ARCH tokenizer.ggml '$text': '$got' vs HF '$want'"; fi
done
want=$("$MOERUN" generate -m "$d" --tokens 5,17,3 -n 6 --precision f32 --ignore-eos 2>/dev/null)
got=$("$MOERUN" generate -m "$f" --tokens 5,17,3 -n 6 --precision f32 --ignore-eos 2>/dev/null)
if [[ -n $got && $got == "$want" ]]; then pass "$ARCH generate on GGUF = HF: $got"; else fail "$ARCH generate: '$got' vs HF '$want'"; fi
if "$MOERUN" inspect -m "$f" 2>/dev/null | grep -q "^validation: OK"; then pass "$ARCH inspect validates"; else fail "$ARCH inspect"; fi
# inspect on the Q8_0 file names the family and holds attn_q as stored: 34 bytes per 32 weights.
out=$("$MOERUN" inspect -m "$WORK/m-q8_0.gguf" 2>/dev/null)
row=$(grep "^| blk.0.attn_q.weight |" <<<"$out")
want=$(awk -F'|' '{gsub(/[][ ]/, "", $4); split($4, ne, ","); print ne[1] * ne[2] / 32 * 34}' <<<"$row")
if grep -q "^family: .*model_type $ARCH$" <<<"$out" && [[ -n $want && $row == *"| Q8_0 |"*"| q8_0 | $want |" ]]; then
  pass "$ARCH inspect: family and memory per tensor ($row)"
else
  fail "$ARCH inspect memory: '$row' (want $want bytes) / $(grep '^family' <<<"$out")"
fi
"$MOERUN" logits -m "$f" --tokens "$TOKENS" -o "$WORK/tp2.logits" --precision f32 --tp 2 2>/dev/null
if msg=$(compare "$WORK/tp2.logits" "$WORK/hf.logits" 1e-5 1.0); then pass "$ARCH F32 GGUF --tp 2: $msg"; else fail "$ARCH --tp 2: $msg"; fi

# Tied embeddings: qwen2moe / olmoe need output.weight (the writer copies the embeddings there),
# qwen3moe / llama fall back to token_embd; either way the logits stay bitwise equal.
t="$WORK/tied"
$PY "$ROOT/tools/make_test_model.py" "$t" --arch "$ARCH" "${EXTRA[@]}" --tie-embeddings >/dev/null 2>&1
$PY "$ROOT/tests/compat/place_gqa_tokenizer.py" "$t" --kind "$KIND"
"$MOERUN" quantize -m "$t" -o "$t.gguf" --type f32 2>/dev/null
"$MOERUN" logits -m "$t" --tokens "$TOKENS" -o "$t.hf" --precision f32 2>/dev/null
"$MOERUN" logits -m "$t.gguf" --tokens "$TOKENS" -o "$t.gg" --precision f32 2>/dev/null
if [[ -s $t.hf ]] && cmp -s "$t.hf" "$t.gg"; then pass "$ARCH tied embeddings: F32 GGUF logits bitwise = HF"; else fail "$ARCH tied embeddings"; fi

# Configs llama.cpp cannot represent: quantize refuses naming the field.
refuse() {  # NEEDLE PYTHON-EDIT
  cp -r "$d" "$WORK/bad"
  $PY - "$WORK/bad/config.json" "$2" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))
PY
  expect_error "quantize refuses" "$1" -- "$MOERUN" quantize -m "$WORK/bad" -o "$WORK/bad.gguf" --type f32
  rm -rf "$WORK/bad"
}
case $ARCH in
  qwen2_moe)
    refuse "mlp_only_layers" 'c["mlp_only_layers"] = [1]'
    refuse "norm_topk_prob true" 'c["norm_topk_prob"] = True'
    ;;
  qwen3_moe)
    refuse "decoder_sparse_step 2" 'c["decoder_sparse_step"] = 2'
    refuse "norm_topk_prob false" 'c["norm_topk_prob"] = False'
    ;;
  olmoe)
    refuse "clip_qkv" 'c["clip_qkv"] = 0.6'
    refuse "num_key_value_heads 4" 'c["num_key_value_heads"] = 4'
    ;;
esac

# Malformed files: errors name the key or the tensor.
edit() { $PY "$HERE/gguf_edit.py" "$f" "$WORK/bad.gguf" "$@"; }
edit --rename "$GARCH.block_count" "$GARCH.block_counX"
expect_error "missing key" "$GARCH.block_count" -- "$MOERUN" generate -m "$WORK/bad.gguf" --tokens 1 -n 1
edit --retype "$GARCH.embedding_length" f32
expect_error "mistyped key" "$GARCH.embedding_length" -- "$MOERUN" generate -m "$WORK/bad.gguf" --tokens 1 -n 1
edit --set-u32 "$GARCH.expert_count" 4
expect_error "expert count vs tensors" "blk.0.ffn_gate_exps.weight" -- "$MOERUN" generate -m "$WORK/bad.gguf" --tokens 1 -n 1
edit --set-u32 "$GARCH.embedding_length" 96
expect_error "tensor shape vs metadata" "expected [" -- "$MOERUN" generate -m "$WORK/bad.gguf" --tokens 1 -n 1

echo "gguf_gqa $ARCH: $failures failure(s)"
[[ $failures -eq 0 ]]
