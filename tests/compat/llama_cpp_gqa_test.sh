#!/usr/bin/env bash
# The GQA families' GGUFs with the real llama.cpp (npm node-llama-cpp; model/gguf_gqa.h): for each
# of qwen2_moe (llama.cpp qwen2moe), qwen3_moe (qwen3moe), olmoe (olmoe) and mixtral (llama with
# experts, q/k rows permuted, SentencePiece vocabulary), a tiny random HF checkpoint with a
# tokenizer of the family's kind (place_gqa_tokenizer.py) is written by `moerun quantize` as F32 and
# Q8_0; llama.cpp loads both, its greedy tokens on fixed prompts equal moerun's on the same file
# (8 tokens at F32, the first 2 at Q8_0 where the two engines' different activation rounding meets
# the random routers' near-ties, as llama_cpp_compat_test.sh), and its tokenization of fixed texts
# (tokenizer.ggml.*) equals moerun's; also for an OLMoE with a cl100k-style tokenizer (pre "dbrx").
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

TEXTS=("the cat sat on the mat" "Hello, world! 123 it's  the heat" "tree hat then ran" "ünïcödé 日本 x"
  "n=1234567;  ok?")

# check_texts FILE LABEL: llama.cpp's ids for TEXTS (no BOS) equal `moerun tokenize` on FILE.
check_texts() {
  local file=$1 label=$2 args=() t theirs mine want
  for t in "${TEXTS[@]}"; do args+=(--text "$t"); done
  if ! theirs=$("$NODE" "$HERE/llama_greedy.mjs" "$file" "${args[@]}" --threads 2 2>"$WORK/err"); then
    fail "$label: llama.cpp tokenize: $(tail -2 "$WORK/err")"
    return
  fi
  local i=0
  for t in "${TEXTS[@]}"; do
    want=$(sed -n "$((i + 1))p" <<<"$theirs" | sed 's/.*"ids":\[\([0-9,]*\)\].*/\1/')
    mine=$("$MOERUN" tokenize -m "$file" -p "$t" 2>/dev/null)
    if [[ -n $mine && $mine == "$want" ]]; then pass "$label tokenize '$t': $mine"; else fail "$label tokenize '$t': moerun '$mine' vs llama.cpp '$want'"; fi
    i=$((i + 1))
  done
}

for spec in "qwen2_moe|qwen2|--qwen-mlp-only-layers=" "qwen3_moe|qwen2|" "olmoe|olmo|--kv-heads=8" "mixtral|spm|"; do
  IFS='|' read -r arch kind extra <<<"$spec"
  hf="$WORK/$arch"
  # shellcheck disable=SC2086
  $PY "$ROOT/tools/make_test_model.py" "$hf" --arch "$arch" ${extra:+"$extra"} >/dev/null 2>&1 || { fail "$arch: make_test_model"; continue; }
  $PY "$HERE/place_gqa_tokenizer.py" "$hf" --kind "$kind"
  for type in f32 q8_0; do
    f="$WORK/$arch-$type.gguf"
    if ! "$MOERUN" quantize -m "$hf" -o "$f" --type "$type" 2>"$WORK/err"; then
      fail "$arch $type: quantize: $(cat "$WORK/err")"
      continue
    fi
    check=8
    [[ $type == q8_0 ]] && check=2
    compare "$f" "moerun-written $arch $type" "$check"
  done
  check_texts "$WORK/$arch-f32.gguf" "$arch"
done

# OLMoE-0125's kind of tokenizer (cl100k-style regex): pre "dbrx", tokenization only.
hf="$WORK/olmoe-dbrx"
$PY "$ROOT/tools/make_test_model.py" "$hf" --arch olmoe --kv-heads 8 >/dev/null 2>&1
$PY "$HERE/place_gqa_tokenizer.py" "$hf" --kind dbrx
if "$MOERUN" quantize -m "$hf" -o "$hf.gguf" --type f32 2>"$WORK/err"; then
  check_texts "$hf.gguf" "olmoe (pre dbrx)"
else
  fail "olmoe dbrx: quantize: $(cat "$WORK/err")"
fi

echo "llama_cpp_gqa: $failures failure(s)"
[[ $failures -eq 0 ]]
