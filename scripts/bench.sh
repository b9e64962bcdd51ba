#!/usr/bin/env bash
# Side-by-side benchmark of moerun and llama.cpp (the npm node-llama-cpp prebuilt, installed on
# demand by scripts/install_llama_cpp_peer.sh) on the SAME GGUF files: DeepSeek-V2-Lite shapes with
# random weights, written by `moerun make-model` (no download). For each format the two engines
# run alternately, one repetition at a time, same thread count, so host noise hits both alike.
# Writes BENCHMARKS.md (CPU model and flags, date, commit, mean ± sd, ratios, the machine's read
# bound and each engine's fraction of it: every timed tg run of either engine is bracketed by
# `moerun read-bandwidth` probes, since the host's bandwidth moves within seconds). Timing here is
# never a pass/fail test.
#
# Usage: scripts/bench.sh [--layers 27] [--types q4_0,q4_k,q8_0] [-p 512] [-n 128] [-r 3] [-t 2]
#                         [--models-dir DIR] [--out BENCHMARKS.md]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LAYERS=27 TYPES=q4_0,q4_k,q8_0 PP=512 TG=128 REPS=3 THREADS=2
MODELS=${MOERUN_BENCH_MODELS:-$ROOT/build/bench-models} OUT=$ROOT/BENCHMARKS.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --layers) LAYERS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    -p) PP=$2; shift 2 ;;
    -n) TG=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    --models-dir) MODELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

[[ -x build/bin/moerun ]] || scripts/build.sh
MOERUN=$ROOT/build/bin/moerun
PEER=$(scripts/install_llama_cpp_peer.sh | tail -1)
NODE=$PEER/bin/node
[[ -x $NODE ]] || NODE=node
mkdir -p "$MODELS"
RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT

IFS=',' read -r -a types <<<"$TYPES"
for type in "${types[@]}"; do
  gguf="$MODELS/v2-lite-${LAYERS}l-$type.gguf"
  if [[ ! -f $gguf ]]; then
    echo "bench.sh: writing $gguf" >&2
    "$MOERUN" make-model --preset deepseek-v2-lite --layers "$LAYERS" --type "$type" -o "$gguf" >&2
  fi
  for ((rep = 1; rep <= REPS; rep++)); do
    echo "bench.sh: $type repetition $rep/$REPS: llama.cpp" >&2
    "$NODE" tests/compat/llama_bench.mjs "$gguf" -p "$PP" -n "$TG" -r 1 -t "$THREADS" --probe "$MOERUN" \
      >"$RESULTS/llama-$type-$rep.json"
    echo "bench.sh: $type repetition $rep/$REPS: moerun" >&2
    "$MOERUN" bench -m "$gguf" -p "$PP" -n "$TG" -r 1 -t "$THREADS" -o json >"$RESULTS/moerun-$type-$rep.json"
  done
done

/usr/bin/python3 bench/bench_report.py "$RESULTS" --types "$TYPES" --layers "$LAYERS" -p "$PP" -n "$TG" \
  -t "$THREADS" --out "$OUT"
echo "bench.sh: wrote $OUT" >&2
