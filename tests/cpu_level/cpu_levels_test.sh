#!/usr/bin/env bash
# The CPU levels below the machine's own, tested on any x86-64 machine; mainly the AVX2-only level
# (AMD Zen 1-3, Intel Haswell to Alder Lake: AVX2 + FMA + F16C, no AVX-512). QEMU's user-mode
# emulator (`qemu-x86_64 -cpu max`, Debian's qemu-user 7.2) runs moerun and the test binaries on an
# emulated CPU whose CPUID offers AVX2, FMA and F16C but no AVX-512 (QEMU's TCG implements no
# AVX-512 instruction), so on that CPU:
#   1. run-time dispatch: `moerun --version` names that CPU and picks an avx2 row for every format.
#      An AVX-512 instruction reached on any path below would stop the run with SIGILL.
#   2. The unit tests of the kernels (every row the CPU has against the double-precision oracle),
#      the core (fixed point, quantisers) and the models pass.
#   3. Whole models: a 2-layer random model of DeepSeek-V2-Lite's real shapes, in every weight
#      format moerun packs but f16 (see below), gives bit for bit the logits of the native run
#      forced to the AVX2 rows (`--kernel avx2`): prefill, decode, and --deterministic on
#      in-process ranks (--tp 2 --ep --shared-replicated) against one native rank. So the forced
#      AVX2 rows of scripts/bench.sh's avx2 level compute what an AVX2-only machine computes (on
#      AMD Zen 4 they are the -nopf twins, which differ from the emulated CPU's rows only in their
#      software prefetch: docs/kernels.md). The float64-reference model tests
#      (tests/model/model_test.sh) pass on the emulated CPU.
#   4. The embedded tiny-arith model's held-out accuracy is >= 0.9 there.
# And on a baseline x86-64 CPU without AVX (`-cpu qemu64`), the portable rows: moerun starts, picks
# a ref row for every format, and a q4_k model's logits equal the native `--kernel ref` run's.
# Speed is not measured here: emulated time says nothing about a real machine.
#
# Needs MOERUN and the test binaries KERNELS_TEST, CORE_TEST, SYNTHETIC_MODEL_TEST, GGUF_MODEL_TEST,
# ENGINE_TEST (set by tests/CMakeLists.txt), and qemu-x86_64 (scripts/install_deps.sh installs it).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# MOERUN, ROOT, WORK (removed on exit), pass / fail and their count.
# shellcheck source=../model/common.sh
source "$HERE/../model/common.sh"

QEMU=$(command -v qemu-x86_64 || true)
if [[ -z $QEMU ]]; then
  echo "FAIL: qemu-x86_64 not found (Debian's qemu-user; scripts/install_deps.sh installs it)"
  exit 1
fi
# emulated_moerun QEMU_CPU: writes and prints a program that runs moerun on that emulated CPU, which
# the model scripts can call in place of moerun.
emulated_moerun() {
  local path="$WORK/moerun-$1"
  printf '#!/bin/sh\nexec "%s" -cpu %s "%s" "$@"\n' "$QEMU" "$1" "$MOERUN" >"$path"
  chmod +x "$path"
  echo "$path"
}
# The emulated AVX2-only CPU.
on_avx2() { "$QEMU" -cpu max "$@"; }
EMULATED=$(emulated_moerun max)

# 1. The emulated CPU and the rows picked on it.
version=$("$EMULATED" --version 2>&1)
cpu=$(grep '^cpu:' <<<"$version")
rows=$(grep '^kernels:' <<<"$version")
if [[ $cpu == *avx2* && $cpu == *fma* && $cpu == *f16c* && $cpu != *avx512* ]]; then
  pass "emulated CPU: $cpu"
else
  fail "the emulated CPU is not AVX2-only: '$cpu' (this test would prove nothing)"
  exit 1
fi
# Every format's row (and its many-row alternative) is an avx2 row.
not_avx2=$(tr ' ' '\n' <<<"${rows#kernels: }" | grep '=' | grep -v '=avx2-' || true)
if [[ -n $rows && -z $not_avx2 ]]; then pass "rows picked: $rows"; else fail "rows not avx2: $not_avx2 ($rows)"; fi

# Steps 2-4 matter where the host has AVX-512. A host that is itself AVX2-only (no avx512f, e.g. an
# AMD Zen 3) runs every ctest natively on this level's rows, the same code the emulated CPU picks, so
# emulating them again (23 minutes on a 2-core Zen 3) would test nothing more: they are skipped there.
native_cpu=$("$MOERUN" --version 2>&1 | grep '^cpu:')
emulate_avx2=true
if [[ $native_cpu != *avx512f* ]]; then
  emulate_avx2=false
  pass "the host is AVX2-only (${native_cpu}): ctest's native runs test this level; steps 2-4 skipped"
fi

# 2. Unit tests on the emulated CPU. Left out: HugePageArena.MappingIsAdvisedForHugePages, because
# qemu-user does not pass madvise(MADV_HUGEPAGE) on to the kernel (THPeligible stays 0 in its smaps).
run_gtest() {
  local name=$1 bin=$2 filter=${3:-*} out
  if out=$(on_avx2 "$bin" --gtest_brief=1 --gtest_filter="$filter" 2>&1); then
    pass "$name on the AVX2-only CPU: $(grep -o 'PASSED  \] [0-9]*' <<<"$out" | grep -o '[0-9]*$') tests passed (at ${SECONDS} s)"
  else
    fail "$name on the AVX2-only CPU:"
    tail -n 30 <<<"$out"
  fi
}
if $emulate_avx2; then
  run_gtest kernels_test "${KERNELS_TEST:?}"
  run_gtest core_test "${CORE_TEST:?}" '-HugePageArena.MappingIsAdvisedForHugePages'
  run_gtest synthetic_model_test "${SYNTHETIC_MODEL_TEST:?}"
  run_gtest gguf_model_test "${GGUF_MODEL_TEST:?}"
  run_gtest engine_test "${ENGINE_TEST:?}"
fi

# 3. Same bits as the native run forced to the AVX2 rows, every weight format.
TOKENS=5,17,3,99,42,7,8,200,1,0
# same_bits NAME NATIVE_ARGS... -- EMULATED_ARGS...: `moerun logits` natively and on $EMULATED
# write the same bytes.
same_bits() {
  local name=$1
  shift
  local native=() emulated=()
  while [[ $1 != -- ]]; do
    native+=("$1")
    shift
  done
  shift
  emulated=("$@")
  if ! "$MOERUN" logits "${native[@]}" -o "$WORK/native.st" 2>"$WORK/err"; then
    fail "$name: native run failed: $(tail -n 2 "$WORK/err")"
    return
  fi
  if ! "$EMULATED" logits "${emulated[@]}" -o "$WORK/emulated.st" 2>"$WORK/err"; then
    fail "$name: run on the emulated CPU failed: $(tail -n 2 "$WORK/err")"
    return
  fi
  if cmp -s "$WORK/native.st" "$WORK/emulated.st"; then
    pass "$name: the same logits bit for bit (at ${SECONDS} s)"
  else
    fail "$name: logits differ between the emulated CPU and the native run"
  fi
}
# f16 is left out: QEMU converts F16C's halves in software, so its 420 MB lm_head takes minutes per
# pass; its row is checked against the oracle by kernels_test above.
avx2_types=(q8_0 q4_0 q5_0 q5_1 q4_k q5_k q6_k bf16)
$emulate_avx2 || avx2_types=()
for type in "${avx2_types[@]}"; do
  model="$WORK/lite-$type.gguf"
  if ! "$MOERUN" make-model --preset deepseek-v2-lite --layers 2 --type "$type" -o "$model" 2>"$WORK/err"; then
    fail "make-model $type: $(tail -n 2 "$WORK/err")"
    continue
  fi
  m=(-m "$model" --tokens "$TOKENS")
  same_bits "$type prefill" "${m[@]}" --kernel avx2 -- "${m[@]}"
  # Decode reads the whole lm_head once per token: 3 tokens.
  d=(-m "$model" --tokens 5,17,3 --decode)
  same_bits "$type decode" "${d[@]}" --kernel avx2 -- "${d[@]}"
  if [[ $type == q4_k ]]; then
    same_bits "$type --deterministic, --tp 2 --ep on the AVX2-only CPU against one native rank" \
      "${m[@]}" --deterministic --kernel avx2 -- "${m[@]}" --deterministic --tp 2 --ep --shared-replicated
  fi
  rm -f "$model"
done

# 3b. The float64-reference model tests, with the emulated CPU as moerun.
if $emulate_avx2; then
  if out=$(MOERUN="$EMULATED" bash "$ROOT/tests/model/model_test.sh" 2>&1); then
    pass "tests/model/model_test.sh on the AVX2-only CPU: $(tail -n 1 <<<"$out")"
  else
    fail "tests/model/model_test.sh on the AVX2-only CPU:"
    grep FAIL <<<"$out"
  fi
fi

# 4. The embedded trained model's held-out accuracy.
if $emulate_avx2 && [[ -f $ROOT/models/tiny-arith/model.safetensors ]]; then
  out=$(cd "$ROOT" && "$EMULATED" eval --task models/tiny-arith/heldout.jsonl 2>/dev/null)
  acc=$(grep -o 'accuracy: [0-9.]*' <<<"$out" | awk '{print $2}')
  if awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.9) }'; then
    pass "tiny-arith on the AVX2-only CPU: $(grep accuracy <<<"$out")"
  else
    fail "tiny-arith accuracy on the AVX2-only CPU below 0.9: '$out'"
  fi
fi

# 5. The portable level on a baseline x86-64 CPU (SSE2, no AVX).
BASELINE=$(emulated_moerun qemu64)
version=$("$BASELINE" --version 2>&1)
rows=$(grep '^kernels:' <<<"$version")
not_ref=$(tr ' ' '\n' <<<"${rows#kernels: }" | grep '=' | grep -v '=ref-' || true)
if [[ -n $rows && -z $not_ref ]]; then pass "baseline x86-64 rows: $rows"; else fail "baseline rows: $version"; fi
model="$WORK/lite-q4_k.gguf"
if "$MOERUN" make-model --preset deepseek-v2-lite --layers 2 --type q4_k -o "$model" 2>"$WORK/err"; then
  m=(-m "$model" --tokens 5,17,3)
  EMULATED=$BASELINE same_bits "q4_k prefill on a baseline x86-64 CPU against native --kernel ref" \
    "${m[@]}" --kernel ref -- "${m[@]}"
else
  fail "make-model q4_k: $(tail -n 2 "$WORK/err")"
fi

echo "cpu_levels_test: $failures failure(s)"
[[ $failures -eq 0 ]]
