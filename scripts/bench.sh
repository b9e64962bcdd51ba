#!/usr/bin/env bash
# Side-by-side benchmark of moerun and llama.cpp (the npm node-llama-cpp prebuilt, installed on
# demand by scripts/install_llama_cpp_peer.sh) on the SAME GGUF files: DeepSeek-V2-Lite shapes with
# random weights, written by `moerun make-model` (no download; a file left by an earlier make-model
# whose tensor types differ from what it writes now is rewritten). For each format the two engines
# run alternately, one repetition at a time, same thread count, so host noise hits both alike.
# Writes BENCHMARKS.md (CPU model and flags, date, commit, mean ± sd, ratios, the machine's read
# bound and each engine's fraction of it: every timed tg run of either engine is bracketed by
# `moerun read-bandwidth` probes, since the host's bandwidth moves within seconds). Timing here is
# never a pass/fail test. Then scripts/bench_moe.sh adds one MoE layer in bf16 (its fraction of the
# read bound at 1, 16 and 128 tokens) and deterministic mode's cost, at the same levels.
#
# --levels native,avx2 also runs both engines' AVX2 code paths on this machine: moerun with
# `--kernel avx2`, llama.cpp from <peer>-avx2 (scripts/install_llama_cpp_peer.sh --cpu-level avx2:
# only the ggml CPU variants an AVX2-only CPU can load, so it loads cpu:haswell, as a Zen 3 does).
# Each repetition runs every level, each level both engines in turn. Default: native (the best
# code path each engine finds for this CPU).
#
# Usage: scripts/bench.sh [--layers 27] [--types q4_0,q4_k,q8_0] [-p 512] [-n 128] [-r 3] [-t 2]
#                         [--levels native[,avx2]] [--models-dir DIR] [--out BENCHMARKS.md]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LAYERS=27 TYPES=q4_0,q4_k,q8_0 PP=512 TG=128 REPS=3 THREADS=2 LEVELS=native
MODELS=${MOERUN_BENCH_MODELS:-$ROOT/build/bench-models} OUT=$ROOT/BENCHMARKS.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --layers) LAYERS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    -p) PP=$2; shift 2 ;;
    -n) TG=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    --levels) LEVELS=$2; shift 2 ;;
    --models-dir) MODELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

IFS=',' read -r -a levels <<<"$LEVELS"
[[ ${#levels[@]} -gt 0 ]] || { echo "bench.sh: --levels is empty" >&2; exit 2; }
for level in "${levels[@]}"; do
  case $level in
    native | avx2) ;;
    *) echo "bench.sh: unknown level '$level' in --levels (native, avx2)" >&2; exit 2 ;;
  esac
done

[[ -x build/bin/moerun ]] || scripts/build.sh
MOERUN=$ROOT/build/bin/moerun
# Per level: the peer folder llama.cpp runs from (MOERUN_PEER_DIR) and moerun's extra options.
declare -A PEER_OF MOERUN_ARGS WANT_BACKEND CHECKED
for level in "${levels[@]}"; do
  case $level in
    native)
      PEER_OF[$level]=$(scripts/install_llama_cpp_peer.sh | tail -1)
      MOERUN_ARGS[$level]="" WANT_BACKEND[$level]="" ;;
    avx2)
      PEER_OF[$level]=$(scripts/install_llama_cpp_peer.sh --cpu-level avx2 | tail -1)
      MOERUN_ARGS[$level]="--kernel avx2" WANT_BACKEND[$level]="cpu:haswell" ;;
  esac
done
mkdir -p "$MODELS"
RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT

# "name type" of a GGUF file's layer-1 tensors (an MoE layer: every kind of matrix the model has).
layer1_types() {
  "$MOERUN" inspect -m "$1" 2>/dev/null |
    awk -F'|' '$2 ~ /^ blk\.1\./ { gsub(/ /, "", $2); gsub(/ /, "", $3); print $2, $3 }'
}

IFS=',' read -r -a types <<<"$TYPES"
for type in "${types[@]}"; do
  gguf="$MODELS/v2-lite-${LAYERS}l-$type.gguf"
  if [[ -f $gguf ]]; then
    # A file written under older type rules (e.g. before q4_k's rows of 1408 fell back to Q5_0)
    # is rewritten: the layer-1 types of a 2-layer model made now must match.
    plan="$RESULTS/plan-$type.gguf"
    if "$MOERUN" make-model --preset deepseek-v2-lite --layers 2 --type "$type" -o "$plan" >/dev/null 2>&1 &&
      [[ $(layer1_types "$plan") != "$(layer1_types "$gguf")" ]]; then
      echo "bench.sh: $gguf holds other tensor types than make-model writes now: rewriting it" >&2
      rm -f "$gguf"
    fi
    rm -f "$plan"
  fi
  if [[ ! -f $gguf ]]; then
    echo "bench.sh: writing $gguf" >&2
    "$MOERUN" make-model --preset deepseek-v2-lite --layers "$LAYERS" --type "$type" -o "$gguf" >&2
  fi
  for ((rep = 1; rep <= REPS; rep++)); do
    for level in "${levels[@]}"; do
      peer=${PEER_OF[$level]}
      node=$peer/bin/node
      [[ -x $node ]] || node=node
      echo "bench.sh: $type repetition $rep/$REPS, $level level: llama.cpp" >&2
      MOERUN_PEER_DIR=$peer "$node" tests/compat/llama_bench.mjs "$gguf" -p "$PP" -n "$TG" -r 1 -t "$THREADS" \
        --probe "$MOERUN" >"$RESULTS/llama-$level-$type-$rep.json"
      if [[ -z ${CHECKED[$level]:-} ]]; then
        # The CPU variant llama.cpp loaded: the avx2 level is meaningless unless it is haswell.
        backend=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("backend", "?"))' \
          "$RESULTS/llama-$level-$type-$rep.json")
        if [[ -n ${WANT_BACKEND[$level]} && $backend != "${WANT_BACKEND[$level]}" ]]; then
          echo "bench.sh: $level level: llama.cpp from $peer loaded backend '$backend', not" \
            "'${WANT_BACKEND[$level]}' (check that folder's bins: scripts/install_llama_cpp_peer.sh --cpu-level $level)" >&2
          exit 1
        fi
        echo "bench.sh: $level level: llama.cpp loaded $backend" >&2
        CHECKED[$level]=1
      fi
      echo "bench.sh: $type repetition $rep/$REPS, $level level: moerun${MOERUN_ARGS[$level]:+ ${MOERUN_ARGS[$level]}}" >&2
      # shellcheck disable=SC2086 # MOERUN_ARGS holds whole options, split on purpose
      "$MOERUN" bench -m "$gguf" -p "$PP" -n "$TG" -r 1 -t "$THREADS" ${MOERUN_ARGS[$level]} -o json \
        >"$RESULTS/moerun-$level-$type-$rep.json"
    done
  done
done

/usr/bin/python3 bench/bench_report.py "$RESULTS" --types "$TYPES" --levels "$LEVELS" --layers "$LAYERS" -p "$PP" \
  -n "$TG" -t "$THREADS" --out "$OUT"
# The one-layer bf16 and deterministic-mode figures (their own section of the same file).
scripts/bench_moe.sh --levels "$LEVELS" -t "$THREADS" --out "$OUT"
echo "bench.sh: wrote $OUT" >&2
