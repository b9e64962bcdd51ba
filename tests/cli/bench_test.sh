#!/usr/bin/env bash
# `moerun bench` and `moerun read-bandwidth` on the embedded tiny model, and `moerun bench-moe` on
# one synthetic DeepSeek-V2-Lite MoE layer: the JSON a benchmark script reads is complete and its
# bound arithmetic is right (recomputed here from the per-run probes),
# on one rank, on in-process ranks and (when mpirun exists) on real processes; bad options fail
# with a message naming them. Speeds are never judged: only their bookkeeping.
set -uo pipefail
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TINY=$ROOT/models/tiny-arith
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

# check_bench NAME REPS N_GEN FILE [DEPTH]: the bench JSON lines in FILE against an independent
# recomputation.
check_bench() {
  local name=$1 reps=$2 n_gen=$3 file=$4 depth=${5:-0} why
  if why=$(/usr/bin/python3 - "$reps" "$n_gen" "$file" "$depth" <<'EOF'
import json, statistics, sys
reps, n_gen, depth = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
lines = [json.loads(l) for l in open(sys.argv[3]) if l.startswith("{")]
tests = {l["test"]: l for l in lines if "test" in l}
b = next(l for l in lines if "read_gbs" in l)
def close(x, y, rel=2e-3):
    return abs(x - y) <= rel * max(abs(x), abs(y), 1e-9)
runs = b["tg_runs"]
assert b["peak_rss_bytes"] > 0 and b["file_bytes"] > 0 and b["weight_bytes_per_token"] > 0, b
assert 0 < b["read_gbs_min"] <= b["read_gbs"] <= b["read_gbs_max"], b
if n_gen == 0:
    assert runs == [] and b["tg_fraction"] == 0 and "tg0" not in tests, b
    sys.exit(0)
tg = tests[f"tg{n_gen}"]
assert tg["reps"] == reps and len(runs) == reps, (tg, runs)
assert tg["n_depth"] == depth and tests.get("pp4", {"n_depth": 0})["n_depth"] == 0, tests
probes = [p for r in runs for p in (r["read_before"], r["read_after"])]
assert all(p > 0 for p in probes), runs
assert close(b["read_gbs"], statistics.mean(probes)), (b, probes)
assert close(b["read_gbs_min"], min(probes)) and close(b["read_gbs_max"], max(probes)), b
assert close(tg["avg_ts"], statistics.mean(r["ts"] for r in runs)), (tg, runs)
bpt = b["weight_bytes_per_token"]
frac = statistics.mean(r["ts"] * bpt / ((r["read_before"] + r["read_after"]) / 2 * 1e9) for r in runs)
assert close(b["tg_fraction"], frac), (b["tg_fraction"], frac)
# Each run's median step rate (of its n_gen steps) and the fraction at that rate against the same
# probes.
assert all(r["median_step_ts"] > 0 for r in runs), runs
frac_median = statistics.mean(r["median_step_ts"] * bpt / ((r["read_before"] + r["read_after"]) / 2 * 1e9)
                              for r in runs)
assert close(b["tg_fraction_median_step"], frac_median), (b["tg_fraction_median_step"], frac_median)
assert close(b["tg_bound_ts"], b["read_gbs"] * 1e9 / bpt), b
EOF
  ); then pass "$name"; else fail "$name: $why"; fi
}

# 1. read-bandwidth alone.
if out=$("$MOERUN" read-bandwidth -t 2 -o json 2>&1) &&
    /usr/bin/python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["read_gbs"] > 0 and j["threads"] == 2' "$out"; then
  pass "read-bandwidth -t 2 -o json ($out)"
else
  fail "read-bandwidth -o json: $out"
fi
if out=$("$MOERUN" read-bandwidth -t 1 2>&1) && grep -qE '^read bandwidth: [0-9.]+ GB/s \(1 threads\)$' <<<"$out"; then
  pass "read-bandwidth markdown ($out)"
else
  fail "read-bandwidth markdown: $out"
fi
for bad in "-o xml|-o 'xml' is not md or json" "-t 0|--threads"; do
  args=${bad%%|*} needle=${bad#*|}
  # shellcheck disable=SC2086
  err=$("$MOERUN" read-bandwidth $args 2>&1 >/dev/null)
  rc=$?
  if [[ $rc -ne 0 && $rc -lt 128 ]] && grep -qF -- "$needle" <<<"$err"; then
    pass "read-bandwidth $args rejected ($err)"
  else
    fail "read-bandwidth $args: rc $rc, $err"
  fi
done

# 2. bench: one rank, pp only, in-process ranks.
"$MOERUN" bench -m "$TINY" -p 4 -n 3 -r 3 -t 2 -o json >"$WORK/one.json" 2>/dev/null &&
  check_bench "bench -r 3 (one rank)" 3 3 "$WORK/one.json" || fail "bench -r 3 exited non-zero"
# tg at a depth: decoded after an untimed prompt of 5 ids, so the cache holds 5 + 1 + 3 positions
# where -d 0 holds 1 + 1 + 3 (the prompt {2}, the first id, 3 timed ones).
"$MOERUN" bench -m "$TINY" -p 0 -n 3 -d 5 -r 2 -t 2 -o json >"$WORK/depth.json" 2>/dev/null &&
  check_bench "bench -d 5" 2 3 "$WORK/depth.json" 5 || fail "bench -d 5 exited non-zero"
"$MOERUN" bench -m "$TINY" -p 0 -n 3 -r 1 -t 2 -o json >"$WORK/nodepth.json" 2>/dev/null &&
  check_bench "bench -n 3 (no depth)" 1 3 "$WORK/nodepth.json" || fail "bench -n 3 exited non-zero"
if why=$(/usr/bin/python3 - "$WORK/depth.json" "$WORK/nodepth.json" <<'EOF'
import json, sys
kv = [next(json.loads(l) for l in open(f) if '"kv_bytes"' in l)["kv_bytes"] for f in sys.argv[1:]]
assert kv[1] > 0 and kv[0] * 5 == kv[1] * 9, kv
EOF
); then pass "bench -d 5 holds 9 cache positions where -d 0 holds 5"; else fail "bench -d kv_bytes: $why"; fi
if out=$("$MOERUN" bench -m "$TINY" -p 0 -n 2 -d 3 -r 1 -t 2 2>/dev/null) && grep -qF '| tg2 @ d3 |' <<<"$out"; then
  pass "bench markdown names the depth"
else
  fail "bench -d markdown: $out"
fi
"$MOERUN" bench -m "$TINY" -p 4 -n 0 -r 2 -t 2 -o json >"$WORK/pp.json" 2>/dev/null &&
  check_bench "bench -n 0 (pp only: one probe)" 2 0 "$WORK/pp.json" || fail "bench -n 0 exited non-zero"
"$MOERUN" bench -m "$TINY" -p 4 -n 2 -r 2 -t 2 --tp 2 --ep -o json >"$WORK/inproc.json" 2>/dev/null &&
  check_bench "bench --tp 2 --ep (in-process ranks)" 2 2 "$WORK/inproc.json" ||
  fail "bench --tp 2 --ep exited non-zero"
if out=$("$MOERUN" bench -m "$TINY" -p 2 -n 2 -r 2 -t 2 2>/dev/null) &&
    grep -qE '^bound: read [0-9.]+ GB/s \(mean of 4 probes just before and after each tg run' <<<"$out" &&
    grep -qE 'reached [0-9]+% \(mean over tg runs .*\), [0-9]+% at each run.s median step time$' <<<"$out"; then
  pass "bench markdown names its probes"
else
  fail "bench markdown: $out"
fi

# 3. bench under mpirun: every process probes, rank 0 reports the sum.
if command -v mpirun >/dev/null; then
  MPIRUN=(mpirun --oversubscribe)
  [[ $(id -u) -eq 0 ]] && MPIRUN+=(--allow-run-as-root)
  "${MPIRUN[@]}" -np 2 "$MOERUN" bench -m "$TINY" -p 4 -n 2 -r 2 -t 1 --tp 2 -o json >"$WORK/mpi.json" 2>/dev/null &&
    check_bench "mpirun -np 2 bench --tp 2" 2 2 "$WORK/mpi.json" || fail "mpirun bench exited non-zero"
else
  echo "SKIP: mpirun not found"
fi

# 4. bench-moe (one DeepSeek-V2-Lite-shaped MoE layer, synthetic bf16 weights kept in $WORK): each
# token count's bound comes from the probes just before and just after its timed calls.
# check_bench_moe NAME FILE: the JSON lines in FILE against a recomputation.
check_bench_moe() {
  local name=$1 file=$2 why
  if why=$(/usr/bin/python3 - "$file" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert [l["tokens"] for l in lines] == [1, 2], lines
def close(x, y, rel=5e-3):
    return abs(x - y) <= rel * max(abs(x), abs(y), 1e-9)
for l in lines:
    assert l["read_before_gb_per_s"] > 0 and l["read_after_gb_per_s"] > 0, l
    assert close(l["read_gb_per_s"], (l["read_before_gb_per_s"] + l["read_after_gb_per_s"]) / 2), l
    assert close(l["bound_fraction"], l["weights_gb_per_s"] / l["read_gb_per_s"]), l
    assert close(l["bound_fraction_mean"], l["weights_gb_per_s_mean"] / l["read_gb_per_s"]), l
    assert close(l["tokens_per_s"], l["tokens"] / (l["median_ms"] / 1e3)), l
    assert l["min_ms"] <= l["median_ms"] and l["min_ms"] <= l["mean_ms"] and l["iters"] >= 3, l
    # The layer's weight bytes per call (the same at every call at one token: 6 routed experts,
    # the shared ones and the router) over the median and over the mean time.
    if l["tokens"] == 1:
        h, i, s, e, k = 2048, 1408, 2816, 64, 6
        per_call = ((k * 3 * h * i + 3 * h * s) * 2 + e * h * 4) / 1e9
        assert close(l["weights_gb_per_s_mean"], per_call / (l["mean_ms"] / 1e3)), l
        assert close(l["weights_gb_per_s"], per_call / (l["median_ms"] / 1e3)), l
EOF
  ); then pass "$name"; else fail "$name: $why"; fi
}
moe_args=(bench-moe --preset v2-lite -n 1,2 --min-time 0.05 --cache-dir "$WORK" --json)
"$MOERUN" "${moe_args[@]}" -t 2 >"$WORK/moe.json" 2>"$WORK/moe.err" &&
  check_bench_moe "bench-moe (one rank)" "$WORK/moe.json" || fail "bench-moe: $(tail -3 "$WORK/moe.err")"
"$MOERUN" "${moe_args[@]}" -t 2 --tp 2 --ep >"$WORK/moe2.json" 2>"$WORK/moe.err" &&
  check_bench_moe "bench-moe --tp 2 --ep (in-process ranks)" "$WORK/moe2.json" ||
  fail "bench-moe --tp 2 --ep: $(tail -3 "$WORK/moe.err")"
if out=$("$MOERUN" bench-moe --preset v2-lite -n 1 --min-time 0.05 --cache-dir "$WORK" -t 2 2>/dev/null) &&
    grep -qE '^\| 1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ / [0-9.]+ \| [0-9]+% \| [0-9]+% \|' <<<"$out"; then
  pass "bench-moe markdown shows the probes before / after"
else
  fail "bench-moe markdown: $out"
fi
if command -v mpirun >/dev/null; then
  "${MPIRUN[@]}" -np 2 "$MOERUN" "${moe_args[@]}" -t 1 --tp 2 --ep >"$WORK/moe-mpi.json" 2>"$WORK/moe.err" &&
    check_bench_moe "mpirun -np 2 bench-moe --tp 2 --ep" "$WORK/moe-mpi.json" ||
    fail "mpirun bench-moe: $(tail -3 "$WORK/moe.err")"
fi

echo "bench_test: $failures failure(s)"
exit $((failures > 0))
