#!/usr/bin/env bash
# `moerun convert-gguf` on tiny tools/make_test_model.py checkpoints, then the model commands with
# `-m FILE.gguf`: the same greedy tokens and the same tokenizer ids as with the HF directory, and
# clear errors (exit != 0, nothing left behind) on bad requests.
set -uo pipefail
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

# The synthetic DeepSeek-LLM tokenizer with its added tokens moved under the models' vocab_size
# (300), and config.json's bos/eos ids pointing at them.
add_tokenizer() { /usr/bin/python3 "$ROOT/tests/tokenizer/testdata/place_synthetic_tokenizer.py" "$1"; }

for variant in lite v2 v3; do
  hf="$WORK/$variant"
  "$ROOT/tools/make_test_model.py" "$hf" --variant "$variant" --dtype f32 >/dev/null || { fail "$variant: make_test_model"; continue; }
  add_tokenizer "$hf"
  if ! "$MOERUN" convert-gguf -m "$hf" -o "$WORK/$variant.gguf" --type f32 2>/dev/null; then
    fail "$variant: convert-gguf"
    continue
  fi
  a=$("$MOERUN" generate -m "$hf" --tokens 295,3,17,42 -n 8 --print-ids -t 1 2>/dev/null)
  b=$("$MOERUN" generate -m "$WORK/$variant.gguf" --tokens 295,3,17,42 -n 8 --print-ids -t 1 2>/dev/null)
  if [[ -n $a && $a == "$b" ]]; then pass "$variant: generate on the GGUF = on the HF directory ($b)"; else
    fail "$variant: generate differs: HF '$a' vs GGUF '$b'"; fi
  a=$("$MOERUN" tokenize -m "$hf" -p "hello the world 12345 你好" 2>/dev/null)
  b=$("$MOERUN" tokenize -m "$WORK/$variant.gguf" -p "hello the world 12345 你好" 2>/dev/null)
  if [[ -n $a && $a == "$b" ]]; then pass "$variant: tokenize ($b)"; else fail "$variant: tokenize '$a' vs '$b'"; fi
done

# f16 and bf16 files load and generate.
for t in f16 bf16; do
  if "$MOERUN" convert-gguf -m "$WORK/v2" -o "$WORK/v2-$t.gguf" --type "$t" 2>/dev/null &&
    "$MOERUN" generate -m "$WORK/v2-$t.gguf" --tokens 295,3 -n 4 --print-ids -t 1 >/dev/null 2>&1; then
    pass "v2 $t: converted and generated"
  else
    fail "v2 $t: convert or generate failed"
  fi
done

out=$("$MOERUN" inspect -m "$WORK/v3.gguf" -t 1 2>/dev/null)
if [[ $out == *"deepseek2.attention.key_length_mla | u32 | 24"* && $out == *"blk.1.ffn_gate_exps.weight | F32 | [64, 32, 16]"* &&
  $out == *"validation: OK"* ]]; then pass "inspect on a GGUF"; else fail "inspect on a GGUF: $out"; fi

err=$("$MOERUN" convert-gguf -m "$WORK/v2" -o "$WORK/bad.gguf" --type q3_k 2>&1 >/dev/null)
rc=$?
if [[ $rc -ne 0 && $rc -lt 128 && $err == *"q3_k"* && ! -e $WORK/bad.gguf ]]; then pass "unknown --type refused ($err)"; else
  fail "unknown --type: $err"; fi
err=$("$MOERUN" generate -m "$WORK/missing.gguf" --tokens 1 -n 1 2>&1 >/dev/null)
rc=$?
if [[ $rc -ne 0 && $rc -lt 128 && $err == *"missing.gguf"* ]]; then pass "missing GGUF named ($err)"; else fail "missing GGUF: $err"; fi
head -c 100 "$WORK/v2.gguf" >"$WORK/trunc.gguf"
err=$("$MOERUN" generate -m "$WORK/trunc.gguf" --tokens 1 -n 1 2>&1 >/dev/null)
rc=$?
if [[ $rc -ne 0 && $rc -lt 128 && $err == *"trunc.gguf"* ]]; then pass "truncated GGUF refused ($err)"; else
  fail "truncated GGUF: $err"; fi

# Quantised files: generate works; a NaN block scale is found by --check-tensors, naming the tensor.
if "$MOERUN" quantize -m "$WORK/v2" -o "$WORK/v2-q8.gguf" --type q8_0 2>/dev/null &&
  "$MOERUN" generate -m "$WORK/v2-q8.gguf" --tokens 295,3 -n 4 --print-ids -t 1 --check-tensors >/dev/null 2>&1; then
  pass "q8_0 GGUF: generate with --check-tensors"
else
  fail "q8_0 GGUF: quantize or generate failed"
fi
/usr/bin/python3 - "$WORK/v2-q8.gguf" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
off = len(d) - 34 * 20  # inside the last tensor (the q8_0 lm_head), past the end padding
d[off:off + 34 * 10] = b"\x7e" * (34 * 10)  # every block scale here reads 0x7e7e: an f16 NaN
open(sys.argv[1], "wb").write(d)
PY
err=$("$MOERUN" generate -m "$WORK/v2-q8.gguf" --tokens 295,3 -n 2 --check-tensors -t 1 2>&1 >/dev/null)
rc=$?
if [[ $rc -ne 0 && $rc -lt 128 && $err == *"nan"* && $err == *"lm_head"* ]]; then pass "NaN block scale found ($err)"; else
  fail "NaN block scale: rc=$rc $err"; fi

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all GGUF CLI tests passed"
