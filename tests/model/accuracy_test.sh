#!/usr/bin/env bash
# The embedded tiny trained model (models/tiny-arith): held-out exact-match accuracy >= 0.9 on one
# rank; the same answers, problem by problem, on every parallel layout (in-process ranks and
# mpirun, --deterministic); and the vLLM #40560 story: a double reduction of the shared-expert
# output under SP is refused by the state checks, and with the checks forced off accuracy collapses.
set -uo pipefail
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODEL="$ROOT/models/tiny-arith"
TASK="$MODEL/heldout.jsonl"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }
[[ -f $MODEL/model.safetensors ]] || { echo "FAIL: $MODEL is missing"; exit 1; }
acc() { grep -o 'accuracy: [0-9.]*' <<<"$1" | awk '{print $2}'; }

one=$("$MOERUN" eval -m "$MODEL" --task "$TASK" --answers "$WORK/one.txt" --deterministic 2>/dev/null | tail -1)
a1=$(acc "$one")
if awk -v a="$a1" 'BEGIN { exit !(a >= 0.9) }'; then pass "one rank: $one"; else fail "one rank accuracy below 0.9: $one"; fi
fast=$("$MOERUN" eval -m "$MODEL" --task "$TASK" 2>/dev/null | tail -1)
if awk -v a="$(acc "$fast")" 'BEGIN { exit !(a >= 0.9) }'; then pass "one rank, fast mode: $fast"; else fail "fast mode: $fast"; fi

# Per weight format (quantised at load, every kernel ISA this CPU has): q8_0 within 0.01 of f32,
# the 4- and 5-bit formats within 0.05. The model is 128 wide, so q6_k falls back to q8_0, q4_k
# to q5_0 and q5_k to q5_1 (their 256-element super-blocks do not fit; see kernels/weight_format.h).
f32=$(acc "$("$MOERUN" eval -m "$MODEL" --task "$TASK" --weight-format f32 2>/dev/null | tail -1)")
for spec in "q8_0|0.01" "f16|0.01" "bf16|0.01" "q4_0|0.05" "q5_0|0.05" "q5_1|0.05" "q6_k|0.01" "q4_k|0.05" "q5_k|0.05"; do
  IFS='|' read -r fmt tol <<<"$spec"
  for kernel in ref avx2 ""; do
    out=$("$MOERUN" eval -m "$MODEL" --task "$TASK" --weight-format "$fmt" ${kernel:+--kernel "$kernel"} 2>&1 | tail -1)
    if awk -v a="$(acc "$out")" -v b="$f32" -v t="$tol" 'BEGIN { exit !(a >= b - t) }'; then
      pass "--weight-format $fmt ${kernel:-auto}: $out (f32 $f32)"
    else
      fail "--weight-format $fmt ${kernel:-auto}: $out, more than $tol below f32 $f32"
    fi
  done
done

LAYOUTS=("--tp 2" "--tp 4" "--tp 2 --ep" "--tp 2 --dp 2 --ep --dispatch alltoall" "--dp 2 --ep"
  "--dp 2 --ep --dispatch alltoall" "--tp 2 --dp 2 --ep --sp" "--tp 2 --dp 2 --ep --sp --dispatch alltoall")
for layout in "${LAYOUTS[@]}"; do
  # shellcheck disable=SC2086
  out=$("$MOERUN" eval -m "$MODEL" --task "$TASK" --answers "$WORK/x.txt" --deterministic $layout 2>/dev/null | tail -1)
  if cmp -s "$WORK/one.txt" "$WORK/x.txt"; then pass "$layout: same answers ($out)"; else fail "$layout: answers differ ($out)"; fi
done

MPIRUN=(timeout 600 mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none
  --mca btl self,vader)
if command -v mpirun >/dev/null; then
  for layout in "2|--tp 2 --ep" "4|--tp 2 --dp 2 --ep --sp"; do
    IFS='|' read -r np flags <<<"$layout"
    # shellcheck disable=SC2086
    out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" eval -m "$MODEL" --task "$TASK" --answers "$WORK/m.txt" --deterministic \
      $flags 2>/dev/null </dev/null | tail -1)
    if cmp -s "$WORK/one.txt" "$WORK/m.txt"; then pass "mpirun -np $np $flags: same answers ($out)"; else fail "mpirun -np $np $flags: ($out)"; fi
  done
fi

# The bug class moerun exists to prevent.
sp=(--tp 2 --dp 2 --ep --sp)
err=$("$MOERUN" eval -m "$MODEL" --task "$TASK" "${sp[@]}" --fault-reduce-shared 2>&1 >/dev/null)
if grep -q "summing token shards adds unrelated tokens" <<<"$err"; then pass "double reduction under SP refused"; else fail "fault not refused: $err"; fi
broken=$("$MOERUN" eval -m "$MODEL" --task "$TASK" "${sp[@]}" --fault-reduce-shared --unsafe-disable-state-checks 2>/dev/null | tail -1)
if awk -v a="$(acc "$broken")" -v b="$a1" 'BEGIN { exit !(a < b - 0.3) }'; then
  pass "with the checks off the accuracy collapses: $broken (correct: $one)"
else
  fail "no collapse with the checks off: $broken (correct: $one)"
fi

echo "accuracy_test: $failures failure(s)"
exit $((failures > 0))
