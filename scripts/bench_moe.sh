#!/usr/bin/env bash
# One MoE layer of DeepSeek-V2-Lite's shapes (64 routed experts, top-6, 2 shared; H 2048, I 1408)
# with bf16 weights on synthetic values: `moerun bench-moe` at 1, 16 and 128 tokens per kernel level,
# each time against the read bandwidth probed just before and after it (the decode bound of one
# layer), and bench/det_ratio's deterministic / fast time ratio at the same token counts (the two
# modes interleaved, so host noise hits both alike). Writes the "moe-layer" section of BENCHMARKS.md
# (scripts/bench.sh keeps it). Timing here is never a pass/fail test.
#
# Usage: scripts/bench_moe.sh [--levels native[,avx2]] [-t 2] [--tokens 1,16,128] [--out BENCHMARKS.md]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LEVELS=native THREADS=2 TOKENS=1,16,128 OUT=$ROOT/BENCHMARKS.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --levels) LEVELS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "bench_moe.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
IFS=',' read -r -a levels <<<"$LEVELS"
[[ ${#levels[@]} -gt 0 ]] || { echo "bench_moe.sh: --levels is empty" >&2; exit 2; }
for level in "${levels[@]}"; do
  case $level in
    native | avx2) ;;
    *) echo "bench_moe.sh: unknown level '$level' in --levels (native, avx2)" >&2; exit 2 ;;
  esac
done
[[ -x build/bin/moerun && -x build/bin/det_ratio ]] || scripts/build.sh
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for level in "${levels[@]}"; do
  kernel=()
  [[ $level == avx2 ]] && kernel=(--kernel avx2)
  echo "bench_moe.sh: bench-moe, bf16 weights, $level level, tokens $TOKENS" >&2
  build/bin/moerun bench-moe --preset v2-lite --weight-format bf16 -n "$TOKENS" -t "$THREADS" "${kernel[@]}" \
    --json >"$WORK/moe-$level.jsonl" 2>"$WORK/moe-$level.log"
  # The kernel row bench-moe picked (its stderr: "..., kernel avx512-bf16 at 1 row").
  sed -n 's/.*, kernel \([^ ]*\) at 1 row.*/\1/p' "$WORK/moe-$level.log" | head -1 >"$WORK/row-$level.txt"
done
echo "bench_moe.sh: det_ratio (deterministic / fast), native level, tokens $TOKENS" >&2
build/bin/det_ratio --tokens "$TOKENS" -t "$THREADS" >"$WORK/det.md"

/usr/bin/python3 - "$WORK" "$LEVELS" "$(git rev-parse --short HEAD)" \
  "$(lscpu | sed -n 's/^Model name: *//p')" <<'PY' | /usr/bin/python3 bench/write_section.py moe-layer "$OUT"
import datetime, json, sys
work, levels, commit, cpu = sys.argv[1:5]
rows = []
for level in levels.split(","):
    kernel = open(f"{work}/row-{level}.txt").read().strip() or "?"
    for line in open(f"{work}/moe-{level}.jsonl"):
        r = json.loads(line)
        rows.append(f"| {level} | {kernel} | {r['tokens']} | {r['median_ms']:.3f} | {r['mean_ms']:.3f} | "
                    f"{r['weights_gb_per_s']:.1f} | "
                    f"{r['read_before_gb_per_s']:.1f} / {r['read_after_gb_per_s']:.1f} | "
                    f"{100 * r['bound_fraction']:.0f}% | {100 * r['bound_fraction_mean']:.0f}% |")
det = []
for line in open(f"{work}/det.md"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 6 and cells[0].isdigit():  # tokens, block, parallel-fast, det, det/block, det/fast
        det.append(f"| {cells[0]} | {cells[2]} | {cells[3]} | {cells[5]} |")
section = f"""<!-- moe-layer:begin -->
## One MoE layer, bf16 weights (`scripts/bench_moe.sh`)

{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, CPU {cpu}. `moerun bench-moe --preset v2-lite
--weight-format bf16`: DeepSeek-V2-Lite's MoE layer (64 routed experts, top-6, 2 shared; H 2048,
I 1408) on synthetic weights. weights GB/s = the weight bytes a call touches (mean over calls) / the
median call time; % of read bound = that over the mean two-thread read bandwidth probed just
before and after the calls (each probe the best of its passes). "At the mean time" divides all
calls' bytes by all calls' time instead: the calls the host preempted (tens of ms now and then)
count there. One token is bound by memory; at 16 and 128 tokens each expert's weights serve
several tokens and compute takes over.

| level | kernel row | tokens | median ms | mean ms | weights GB/s | read GB/s before / after | % of read bound | at the mean time |
|---|---|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + """

Deterministic mode (`--deterministic`: fixed-point sums, the same bits on every layout) against
fast mode, one rank, the two interleaved call by call (bench/det_ratio; median over 40 rounds of
the per-round ratio):

| tokens | fast ms | deterministic ms | deterministic / fast |
|---:|---:|---:|---:|
""" + "\n".join(det) + """
<!-- moe-layer:end -->
"""
print(section)
PY
echo "bench_moe.sh: wrote $OUT" >&2
