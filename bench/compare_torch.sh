#!/usr/bin/env bash
# moerun bench-moe beside the naive PyTorch MoE layer (bench/torch_moe_baseline.py), same machine,
# same run, same shapes (DeepSeek-V2-Lite, bf16 weights), same thread count; prints both and the
# ratio per token count. The two run alternately per token count so that host noise hits both.
# Usage: bench/compare_torch.sh [--tokens 1,16,128,1024] [--threads 2] [--min-time 2] [--rounds 2]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=1,16,128,1024 THREADS=$(nproc) MIN_TIME=2 ROUNDS=2
while [[ $# -gt 0 ]]; do
  case $1 in
    --tokens) TOKENS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --min-time) MIN_TIME=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/install_deps.sh --bench  # PyTorch for the baseline
MOERUN=${MOERUN:-build/bin/moerun}
[[ -x $MOERUN ]] || scripts/build.sh
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq "$ROUNDS"); do
  for t in ${TOKENS//,/ }; do
    "$MOERUN" bench-moe --tokens "$t" -t "$THREADS" --min-time "$MIN_TIME" --json 2>/dev/null |
      sed 's/^{/{"impl": "moerun", /' >>"$out"
    /usr/bin/python3 bench/torch_moe_baseline.py --tokens "$t" --threads "$THREADS" --min-time "$MIN_TIME" >>"$out"
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys, collections
best = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["impl"], r["tokens"])
    # median of each round; keep the best round per implementation (both get the same treatment)
    if r["tokens_per_s"] > best[key].get("tokens_per_s", 0):
        best[key] = r
tokens = sorted({t for _, t in best})
print("| tokens | moerun tok/s | torch tok/s | ratio | moerun GB/s | moerun GFLOP/s |")
print("|---:|---:|---:|---:|---:|---:|")
for t in tokens:
    m, p = best[("moerun", t)], best[("torch", t)]
    print(f"| {t} | {m['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} | {m['tokens_per_s'] / p['tokens_per_s']:.2f}x "
          f"| {m['weights_gb_per_s']:.1f} | {m['gflop_per_s']:.1f} |")
PY
