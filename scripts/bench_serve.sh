#!/usr/bin/env bash
# Serving benchmark: `moerun serve` (tiny-arith, or -m MODEL) under the bounded load test of
# tests/serve/load_test.mjs (64 concurrent streaming clients, a fixed number of requests, every
# answer checked against its answer alone); writes the "Serving" section of BENCHMARKS.md
# (requests/s, output tokens/s, p50/p99 TTFT and inter-token latency, CPU, date, commit).
# Usage: scripts/bench_serve.sh [--requests N] [--clients C] [moerun serve args...]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=512
CLIENTS=64
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) REQUESTS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
MOERUN=${MOERUN:-build/bin/moerun}
[[ -x "$MOERUN" ]] || scripts/build.sh
SERVE_HERE="$PWD/tests/serve"
source tests/serve/common.sh
serve_npm_install
WORK=$(mktemp -d)
trap 'kill -KILL ${SERVE_PID:-0} 2>/dev/null || true; rm -rf "$WORK"' EXIT
serve_start "$WORK/serve.log" -- "${ARGS[@]}"
serve_node load_test.mjs "$SERVE_URL" models/tiny-arith/heldout.jsonl --clients "$CLIENTS" --requests "$REQUESTS" \
  --out "$WORK/load.json"
serve_stop
/usr/bin/python3 - "$WORK/load.json" "$(git rev-parse --short HEAD)" "$(lscpu | sed -n 's/^Model name: *//p')" \
  "${ARGS[*]:-}" <<'PY' | /usr/bin/python3 bench/write_section.py serving BENCHMARKS.md
import datetime, json, sys
r = json.load(open(sys.argv[1]))
commit, cpu, args = sys.argv[2], sys.argv[3], sys.argv[4] or "(defaults: tiny-arith, one rank)"
section = f"""<!-- serving:begin -->
## Serving (`scripts/bench_serve.sh`)

{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, CPU {cpu}; `moerun serve {args}`;
{r['clients']} concurrent streaming clients (openai npm package) on loopback, {r['requests']} greedy
requests of at most 16 tokens, every answer complete and equal to its answer sent alone
(mismatches: {r['mismatches']}).

| requests/s | output tokens/s | TTFT p50 | TTFT p99 | inter-token p50 | inter-token p99 |
|---:|---:|---:|---:|---:|---:|
| {r['requests_per_s']} | {r['output_tokens_per_s']} | {r['ttft_p50_ms']} ms | {r['ttft_p99_ms']} ms | {r['itl_p50_ms']} ms | {r['itl_p99_ms']} ms |

Inter-token latency is measured at the client between streamed chunks (tokens that arrive in one
read count as 0 ms apart); the server's own view is `moerun_inter_token_latency_seconds` in /metrics.
<!-- serving:end -->
"""
print(section)
PY
