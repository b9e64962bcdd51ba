#!/usr/bin/env bash
# In-process ranks (threads) end to end, small enough to run under ThreadSanitizer (label tsan,
# scripts/test.sh): the MoE layer on every layout (tp, ep with allgather and alltoall dispatch, sp,
# dp, --deterministic bitwise equal to one rank), a whole model's eval and generate on
# --tp 2 --dp 2 --ep --sp with a thread pool per rank, rank agreement, and the server answering
# concurrent requests on in-process ranks exactly as it answers each alone, then a failing rank.
# Under TSan a report is also an error: every moerun's stderr is checked for "ThreadSanitizer".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cli/reliability_common.sh
source "$HERE/reliability_common.sh"
MODEL="$ROOT/models/tiny-arith"

# m ARGS...: moerun with stderr kept in $WORK/err; a sanitizer report fails the test whatever the
# exit code (error-path checks expect non-zero codes).
m() {
  "$MOERUN" "$@" 2>"$WORK/err"
  local rc=$?
  if grep -q "ThreadSanitizer" "$WORK/err"; then
    fail "ThreadSanitizer report in: moerun $*"
    cat "$WORK/err" >&2
  fi
  return $rc
}

echo "== moe-layer on every layout, 2 threads per rank"
ex="$WORK/ex"
"$MOERUN" make-example --out "$ex" --preset v3 --small --tokens 24 --dtype bf16 2>/dev/null
io=(--config "$ex/config.json" -m "$ex/layer.safetensors" -i "$ex/x.safetensors")
m moe-layer "${io[@]}" -o "$WORK/det1.st" --deterministic -t 1 >/dev/null
for layout in "--tp 2" "--tp 2 --ep" "--dp 2 --ep" "--dp 2 --ep --dispatch alltoall" "--tp 2 --dp 2 --ep --sp" \
  "--tp 2 --dp 2 --ep --sp --dispatch alltoall"; do
  read -ra flags <<<"$layout"
  tp=$(grep -o -- '--tp [0-9]*' <<<"$layout" | awk '{print $2}') dp=$(grep -o -- '--dp [0-9]*' <<<"$layout" | awk '{print $2}')
  nt=$((2 * ${tp:-1} * ${dp:-1}))  # 2 threads per rank
  if out=$(m moe-layer "${io[@]}" -o "$WORK/y.st" --check -t "$nt" "${flags[@]}") && grep -q "check: PASS" <<<"$out"; then
    pass "moe-layer $layout -t $nt: check PASS"
  else
    fail "moe-layer $layout: $out $(tail -3 "$WORK/err")"
  fi
  m moe-layer "${io[@]}" -o "$WORK/detx.st" --deterministic -t "$nt" "${flags[@]}" >/dev/null
  if cmp -s "$WORK/det1.st" "$WORK/detx.st"; then pass "moe-layer $layout --deterministic: bitwise"; else fail "moe-layer $layout --deterministic differs"; fi
done

echo "== a whole model on --tp 2 --dp 2 --ep --sp (4 ranks x 2 threads)"
head -n 8 "$MODEL/heldout.jsonl" >"$WORK/task.jsonl"
m eval -m "$MODEL" --task "$WORK/task.jsonl" --answers "$WORK/one.txt" --deterministic -t 1 >/dev/null
for layout in "--tp 2 --dp 2 --ep --sp" "--tp 2 --dp 2 --ep --dispatch alltoall"; do
  read -ra flags <<<"$layout"
  m eval -m "$MODEL" --task "$WORK/task.jsonl" --answers "$WORK/x.txt" --deterministic -t 8 "${flags[@]}" >/dev/null
  if [[ -s $WORK/one.txt ]] && cmp -s "$WORK/one.txt" "$WORK/x.txt"; then pass "eval $layout: same answers"; else fail "eval $layout: answers differ"; fi
done
g1=$(m generate -m "$MODEL" --tokens 5,17,3 -n 6 --deterministic -t 1)
g=$(m generate -m "$MODEL" --tokens 5,17,3 -n 6 --deterministic -t 8 --tp 2 --dp 2 --ep --sp)
if [[ -n $g && $g == "$g1" ]]; then pass "generate --tp 2 --dp 2 --ep --sp: $g"; else fail "generate: '$g' vs '$g1'"; fi

echo "== rank agreement"
disagree="ranks disagree on 'fault injection': rank 0 has no such field, rank 1 has '--fault-disagree-rank'"
if ! m generate -m "$MODEL" --tokens 1,2,3 -n 4 --tp 2 -t 2 --fault-disagree-rank 1 >/dev/null &&
  grep -qF "$disagree" "$WORK/err"; then
  pass "a disagreeing rank stops every rank"
else
  fail "disagreeing rank: $(tail -3 "$WORK/err")"
fi
echo "== serve on --tp 2 --dp 2 --ep: 8 concurrent requests, each answered as alone"
# shellcheck source=tests/serve/common.sh
SERVE_HERE="$ROOT/tests/serve"
source "$SERVE_HERE/common.sh"
serve_fail() {
  fail "serve: $*"
  kill -KILL "${SERVE_PID:-0}" 2>/dev/null
  finish inproc_test
}
serve_start "$WORK/serve.log" -- -m "$MODEL" -t 8 --tp 2 --dp 2 --ep --deterministic
prompts=("44*1=" "224+5=" "7+7=" "600+32=" "68*8=" "693-7=" "254+883=" "6+6=")
ask() { curl -s "$SERVE_URL/v1/completions" -d "{\"prompt\": \"$1\", \"max_tokens\": 6, \"temperature\": 0}"; }
text() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])'; }
for i in "${!prompts[@]}"; do ask "${prompts[$i]}" | text >"$WORK/alone.$i" 2>&1; done
pids=()
for i in "${!prompts[@]}"; do
  (ask "${prompts[$i]}" | text >"$WORK/together.$i" 2>&1) &
  pids+=($!)
done
wait "${pids[@]}"
same=0
for i in "${!prompts[@]}"; do
  if [[ -s $WORK/alone.$i ]] && cmp -s "$WORK/alone.$i" "$WORK/together.$i"; then same=$((same + 1)); fi
done
if [[ $same -eq ${#prompts[@]} ]]; then pass "8 concurrent answers = alone"; else fail "only $same of 8 concurrent answers equal their answer alone"; fi
serve_stop
if grep -q "ThreadSanitizer" "$WORK/serve.log"; then
  fail "ThreadSanitizer report in moerun serve"
  cat "$WORK/serve.log" >&2
else
  pass "serve exited 0 after SIGTERM"
fi

echo "== serve: rank 1 fails once loaded; its peers stop at once, /health names it"
SERVE_READY_CODE=503 serve_start "$WORK/fail.log" -- -m "$MODEL" -t 4 --tp 2 --collective-timeout 60 --fault-fail-rank 1
health=""
for _ in $(seq 1 100); do
  health=$(curl -s "$SERVE_URL/health")
  [[ $health == *'"failed"'* ]] && break
  sleep 0.1
done
kill -TERM "$SERVE_RANK0_PID"
rc=0
wait "$SERVE_PID" || rc=$?
if [[ $health == *"world rank 1 failed"* && $rc -ne 0 ]] && ! grep -q "ThreadSanitizer" "$WORK/fail.log"; then
  pass "a failed rank: /health $health; exit $rc"
else
  fail "a failed rank: /health '$health', exit $rc: $(tail -5 "$WORK/fail.log")"
fi

finish inproc_test
