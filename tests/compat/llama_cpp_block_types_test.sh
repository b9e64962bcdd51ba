#!/usr/bin/env bash
# The GGUF block types llama.cpp's quantiser mixes into K-quant files (Q5_0, Q5_1, Q5_K, native in
# moerun, and the load-only Q3_K, Q2_K, IQ4_NL), and the load-only IQ4_XS of its IQ4_XS files, with
# the real llama.cpp (npm node-llama-cpp, installed on demand) as the outside check:
# make_tiny_gguf.py --block-types writes a tiny DeepSeek-V2 (MLA, no q-LoRA) whose matrices are random valid blocks of those types (ffn_down_exps
# rows of 96 = Q5_0, as llama.cpp's fallback for V2-Lite's 1408-wide rows); llama.cpp computes with
# the blocks as stored, moerun keeps the Q5 blocks and dequantises the others at load into q8_0
# (default) or f32 (--weight-format f32).
# With f32 weights (the exact dequantised values) moerun must give llama.cpp's greedy tokens, all
# 8 of every prompt, for two random models. By default (the Q5 blocks as stored, the others
# re-quantised to q8_0, int8 activations) the tiny random models' margins are too small for 8
# tokens (seed 1's first prompt flips at its 3rd), so there the first 2 must match, and the first
# position's logits must be within 0.3 of llama.cpp's (check_logits). And moerun must say once, on stderr, which types it converted and
# into what (never a Q5 type).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
# The types each kind of file must name in its one warning line (iq4-xs: exactly these counts).
declare -A WANT_TYPES=([block-types]="Q2_K x |Q3_K x |IQ4_NL x " [iq4-xs]="IQ4_NL x 4, IQ4_XS x 13")

# Two files of each kind: --block-types as above; --iq4-xs (every matrix IQ4_XS, or IQ4_NL where its
# rows are not a multiple of 256, as llama.cpp's quantiser writes IQ4_XS files), where both weight
# formats must give llama.cpp's 8 greedy tokens of every prompt and its first logits within 0.3
# (measured: <= 0.04; a scale nibble read from the wrong half of its byte gives 0.9-2.7 and other
# tokens).
for kind in block-types iq4-xs; do
  for seed in 1 2; do
    f="$WORK/$kind-$seed.gguf"
    if ! $PY "$HERE/make_tiny_gguf.py" "$f" "--$kind" --seed "$seed" >/dev/null; then
      fail "$kind seed $seed: make_tiny_gguf.py --$kind"
      continue
    fi
    llama_greedy "$f" "$kind seed $seed" || continue
    for format in default f32; do
      fmt_args=()
      into=q8_0
      [[ $format == f32 ]] && fmt_args=(--weight-format f32) && into=f32
      check=8
      [[ $kind == block-types && $format == default ]] && check=2
      label="$kind seed $seed, moerun $format weights"
      check_prompts "$f" "$label" "$check" "${fmt_args[@]}"
      [[ $kind == iq4-xs || $format == default ]] && check_logits "$f" "$label" 0.3 "${fmt_args[@]}"
      # The one warning line: every converted type, and the format they went into.
      warnings=$(grep -c "tensors are not native here" "$WORK/moerun.err")
      line=$(grep "tensors are not native here" "$WORK/moerun.err")
      ok=1
      [[ $warnings -eq 1 && $line == "moerun: $f: "*" tensors are not native here: dequantised at load into $into" ]] || ok=0
      if [[ $kind == iq4-xs ]]; then
        [[ $line == "moerun: $f: ${WANT_TYPES[$kind]} tensors are not native here"* ]] || ok=0
      else
        IFS='|' read -ra want <<<"${WANT_TYPES[$kind]}"
        for t in "${want[@]}"; do [[ $line == *"$t"* ]] || ok=0; done
      fi
      [[ $line == *"Q5_"* ]] && ok=0
      if [[ $ok -eq 1 ]]; then pass "$label: warning: $line"; else fail "$label: $warnings warning line(s): '$line'"; fi
    done
  done
done

echo "llama_cpp_block_types: $failures failure(s)"
[[ $failures -eq 0 ]]
