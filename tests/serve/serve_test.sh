#!/usr/bin/env bash
# `moerun serve` end to end with real clients: the official openai npm package (completions, chat,
# streaming, usage, stop, logprobs, errors, batching), malformed and hostile requests, the chat page
# in headless Chromium, SIGTERM draining, and the same client test on in-process TP/DP ranks.
# mpirun layouts: serve_mpi_test.sh. Needs MOERUN; exit 0 only if every part passed.
set -euo pipefail
SERVE_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$SERVE_HERE/common.sh"
[[ -x "${MOERUN:-}" ]] || serve_fail "MOERUN is not set to the moerun binary"
serve_npm_install
WORK=$(mktemp -d)
trap 'kill -KILL ${SERVE_PID:-0} 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== one rank, fast mode"
serve_start "$WORK/s1.log" -- -t 2
serve_node openai_client_test.mjs "$SERVE_URL"
serve_node malformed_test.mjs "$SERVE_URL"
echo "-- load: 64 concurrent streaming clients, 256 requests, every answer = its answer alone"
serve_node load_test.mjs "$SERVE_URL" "$SERVE_HERE/../../models/tiny-arith/heldout.jsonl" --clients 64 \
  --requests 256 --out "$WORK/load.json"
echo "-- held-out accuracy through the HTTP API = moerun eval's"
http=$(serve_node accuracy_http.mjs "$SERVE_URL" "$SERVE_HERE/../../models/tiny-arith/heldout.jsonl")
serve_stop
eval_line=$("$MOERUN" eval -t 2 --task "$SERVE_HERE/../../models/tiny-arith/heldout.jsonl" 2>/dev/null | tail -1)
[[ "$http" == "$eval_line" ]] || serve_fail "HTTP accuracy '$http' != eval '$eval_line'"
echo "HTTP $http = eval"

echo "== the chat page in headless Chromium (a random-weight model with tiny-arith's tokenizer: it talks)"
ROOT="$(cd "$SERVE_HERE/../.." && pwd)"
/usr/bin/python3 "$ROOT/tools/make_test_model.py" "$WORK/chatty" --variant v2 --vocab 264 \
  --tokenizer-dir "$ROOT/models/tiny-arith" >/dev/null
serve_start "$WORK/s5.log" -- -t 2 -m "$WORK/chatty"
serve_node chat_page_test.mjs "$SERVE_URL" /usr/bin/chromium
serve_stop

echo "== one rank, --deterministic (batched logprobs bitwise equal to alone)"
serve_start "$WORK/s2.log" -- -t 2 --deterministic
serve_node openai_client_test.mjs "$SERVE_URL" --deterministic
serve_stop

echo "== a tight KV pool (1024 positions): 64 concurrent clients wait for blocks, answers unchanged; prefix cache"
serve_start "$WORK/s6.log" -- -t 2 --deterministic --kv-cache-tokens 1024 --max-model-len 512 --max-num-seqs 64
serve_node kv_test.mjs "$SERVE_URL"
serve_node load_test.mjs "$SERVE_URL" "$SERVE_HERE/../../models/tiny-arith/heldout.jsonl" --clients 64 --requests 128
serve_stop

echo "== in-process ranks: --tp 2 --dp 2 --ep --deterministic"
serve_start "$WORK/s3.log" -- -t 2 --tp 2 --dp 2 --ep --deterministic
serve_node openai_client_test.mjs "$SERVE_URL" --deterministic --parallel
serve_stop

echo "== SIGTERM while a long stream runs: the client sees a complete answer or an error event, exit 0"
serve_start "$WORK/s4.log" -- -t 2 --drain-timeout 1
serve_node drain_test.mjs "$SERVE_URL" "$SERVE_RANK0_PID"
serve_stop
grep -q "draining" "$WORK/s4.log" || serve_fail "no drain message in the server log"
echo "== a rank fails: /health and requests answer 503 with the reason (in-process --tp 2, 2 s deadline)"
# Its peers stop at once, so /health goes from loading to failed (503) without a ready (200) between.
SERVE_READY_CODE=503 serve_start "$WORK/s7.log" -- -t 2 --tp 2 --collective-timeout 2 --fault-fail-rank 1
for _ in $(seq 1 100); do
  health=$(curl -s "$SERVE_URL/health")
  [[ $health == *'"failed"'* ]] && break
  sleep 0.1
done
# In-process ranks: the peers stop as soon as rank 1 fails (not at the 2 s deadline), naming it.
[[ $health == *'"failed"'* && $health == *"world rank 1 failed"* ]] ||
  serve_fail "/health after a rank failed: $health"
code=$(curl -s -o "$WORK/err.json" -w '%{http_code}' "$SERVE_URL/v1/completions" -d '{"prompt": "1+1=", "max_tokens": 2}')
[[ $code == 503 ]] && grep -q '"error"' "$WORK/err.json" || serve_fail "a request after a rank failed: $code $(cat "$WORK/err.json")"
kill -TERM "$SERVE_RANK0_PID"
rc=0
wait "$SERVE_PID" || rc=$?
[[ $rc -ne 0 ]] || serve_fail "a server whose rank failed exited 0"
echo "PASS: a failed rank: /health $health; requests 503; exit $rc"

echo "serve_test: all passed"
