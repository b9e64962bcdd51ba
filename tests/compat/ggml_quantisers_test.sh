#!/usr/bin/env bash
# moerun's quantisers (QuantizeRow: Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) against ggml's own
# reference quantisers, byte for byte, on the same inputs: tests/core/quant_reference.py (an
# independent numpy port) is checked against the quantize_row_*_ref functions of the real
# libggml-base.so that node-llama-cpp ships (called through ctypes), and against moerun's
# (tests/core/block_tool); equal bytes on both sides make moerun's equal to ggml's.
# usage: BLOCK_TOOL=build/bin/block_tool ggml_quantisers_test.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BLOCK_TOOL=${BLOCK_TOOL:?set BLOCK_TOOL to the block_tool binary}
PEER=$("$ROOT/scripts/install_llama_cpp_peer.sh" | tail -1) || { echo "FAIL: cannot install node-llama-cpp"; exit 1; }
LIB=$(find "$PEER/node_modules/@node-llama-cpp" -name "libggml-base.so" -path "*linux-x64*" | head -1)
[[ -n $LIB ]] || { echo "FAIL: no libggml-base.so under $PEER"; exit 1; }
failures=0
for seed in 1 2; do
  if /usr/bin/python3 "$ROOT/tests/core/quant_reference.py" --ggml-lib "$LIB" --seed "$seed"; then
    echo "PASS: seed $seed: the numpy reference gives ggml's bytes ($LIB)"
  else
    echo "FAIL: seed $seed: the numpy reference differs from ggml ($LIB)"; failures=$((failures + 1))
  fi
  if /usr/bin/python3 "$ROOT/tests/core/quant_reference.py" "$BLOCK_TOOL" --seed "$seed"; then
    echo "PASS: seed $seed: moerun's quantisers give the same bytes"
  else
    echo "FAIL: seed $seed: moerun's quantisers differ"; failures=$((failures + 1))
  fi
done
echo "ggml_quantisers: $failures failure(s)"
[[ $failures -eq 0 ]]
