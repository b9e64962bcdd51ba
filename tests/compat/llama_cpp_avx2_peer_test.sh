#!/usr/bin/env bash
# The AVX2 level of scripts/bench.sh: `install_llama_cpp_peer.sh --cpu-level avx2` makes
# <peer>-avx2, a hardlinked copy of the peer whose bins keep only the ggml CPU variants an AVX2 +
# FMA + F16C CPU without AVX-512 / AVX-VNNI can load, and llama.cpp run from it loads cpu:haswell
# (the variant an AMD Zen 3 loads) even on an AVX-512 machine; the original peer keeps its variants.
# Needs a CPU with AVX2 + FMA + F16C (haswell is then the best variant left). No timing checks.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
BINS_REL="node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"

if ! AVX2_PEER=$("$ROOT/scripts/install_llama_cpp_peer.sh" --cpu-level avx2 2>"$WORK/err" | tail -1); then
  echo "FAIL: install_llama_cpp_peer.sh --cpu-level avx2: $(tail -2 "$WORK/err")"
  exit 1
fi
if [[ $AVX2_PEER == "$PEER-avx2" ]]; then pass "avx2 peer folder: $AVX2_PEER"; else fail "avx2 peer folder '$AVX2_PEER', expected '$PEER-avx2'"; fi

# Only allowlisted variants, haswell among them; none with AVX-512 or AVX-VNNI.
variants="" bad=""
for lib in "$AVX2_PEER/$BINS_REL"/libggml-cpu-*.so; do
  [[ -e $lib ]] || continue
  v=${lib##*/libggml-cpu-}
  v=${v%.so}
  variants+=" $v"
  case $v in
    x64 | sse42 | sandybridge | ivybridge | piledriver | haswell) ;;
    *) bad+=" $v" ;;
  esac
done
if [[ -z $bad && "$variants " == *" haswell "* ]]; then
  pass "avx2 peer CPU variants:$variants"
else
  fail "avx2 peer CPU variants:$variants (not allowed:${bad:- none}; haswell needed)"
fi
# Running it again changes nothing and prints the same folder.
again=$("$ROOT/scripts/install_llama_cpp_peer.sh" --cpu-level avx2 2>/dev/null | tail -1)
if [[ $again == "$AVX2_PEER" ]]; then pass "second run: same folder"; else fail "second run printed '$again'"; fi
# The original peer is untouched by the copy's deletions.
for v in zen4 skylakex haswell; do
  if [[ -f "$PEER/$BINS_REL/libggml-cpu-$v.so" ]]; then pass "original peer keeps libggml-cpu-$v.so"
  else fail "original peer lost libggml-cpu-$v.so"; fi
done

# llama.cpp from the copy loads haswell.
f="$WORK/tiny-ds.gguf"
if ! $PY "$HERE/make_tiny_gguf.py" "$f" >/dev/null; then
  fail "make_tiny_gguf.py"
elif ! out=$(MOERUN_PEER_DIR=$AVX2_PEER "$AVX2_PEER/bin/node" "$HERE/llama_bench.mjs" "$f" -p 8 -n 4 -r 1 -t 2 --no-warmup \
  2>"$WORK/err"); then
  fail "llama_bench.mjs from the avx2 peer: $(tail -2 "$WORK/err")"
else
  backend=$($PY -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["backend"])' <<<"$out")
  if [[ $backend == cpu:haswell ]]; then pass "llama.cpp from the avx2 peer: backend $backend"
  else fail "llama.cpp from the avx2 peer: backend '$backend', expected cpu:haswell"; fi
fi
if [[ -f "$PEER/$BINS_REL/libggml-cpu-zen4.so" ]]; then pass "original peer still has libggml-cpu-zen4.so after the run"
else fail "original peer lost libggml-cpu-zen4.so"; fi

echo "llama_cpp_avx2_peer: $failures failure(s)"
[[ $failures -eq 0 ]]
