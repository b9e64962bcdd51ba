#!/usr/bin/env bash
# `moerun plan` against real runs: on several layouts (in-process ranks), the collectives the plan
# derives from config.json alone equal those rank 0 logs in `logits --stats` (op, group, what,
# from/to states and bytes; all_to_all result bytes depend on the routing and are not compared).
# Impossible layouts are refused by plan with the runner's own message.
set -uo pipefail
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

d="$WORK/lite"
$PY "$ROOT/tools/make_test_model.py" "$d" --variant lite --dtype f32 >/dev/null
TOKENS=5,17,3,99,42,7,8,200,1,0,33
T=11

# same PLAN_JSON STATS_LINE: exit 0 when the lists agree, else print the first difference.
same() {
  $PY - "$1" "$2" <<'PY'
import json, sys
plan = json.loads(sys.argv[1])["collectives"]
run = json.loads(sys.argv[2])["collectives"]
if len(plan) != len(run):
    print(f"{len(plan)} planned vs {len(run)} run collectives"); sys.exit(1)
for i, (p, r) in enumerate(zip(plan, run)):
    keys = ["op", "group", "what", "from", "to"] + ([] if p.get("data_dependent") else ["bytes"])
    for k in keys:
        if p[k] != r[k]:
            print(f"#{i} {k}: plan {p[k]!r} vs run {r[k]!r}"); sys.exit(1)
print(f"{len(plan)} collectives agree")
PY
}

while IFS='|' read -r layout per_replica; do
  # shellcheck disable=SC2086
  plan=$("$MOERUN" plan -m "$d" -p "$per_replica" --all-logits --json $layout 2>&1)
  # shellcheck disable=SC2086
  run=$("$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$WORK/l.st" --stats $layout 2>&1 >/dev/null | grep '^{"forward": 0')
  if msg=$(same "$plan" "$run"); then pass "plan = run for $layout: $msg"; else fail "plan != run for $layout: $msg"; fi
done <<LAYOUTS
--tp 2|$T
--tp 2 --shared-replicated|$T
--tp 2 --ep|$T
--tp 2 --deterministic|$T
--tp 2 --ep --sp|$T
--tp 4 --ep --sp --dispatch alltoall|$T
--dp 2 --ep|$T,0
--tp 2 --dp 2 --ep --dispatch alltoall|$T,0
--tp 2 --dp 2 --ep --sp --deterministic|$T,0
LAYOUTS

# The GQA families: OLMoE's q/k norm all_gather, Qwen2-MoE's gated shared expert and dense layer.
for arch in olmoe qwen2_moe; do
  g="$WORK/$arch"
  $PY "$ROOT/tools/make_test_model.py" "$g" --arch "$arch" --dtype f32 >/dev/null 2>&1
  while IFS='|' read -r layout per_replica; do
    # shellcheck disable=SC2086
    plan=$("$MOERUN" plan -m "$g" -p "$per_replica" --all-logits --json $layout 2>&1)
    # shellcheck disable=SC2086
    run=$("$MOERUN" logits -m "$g" --tokens "$TOKENS" -o "$WORK/l.st" --stats $layout 2>&1 >/dev/null | grep '^{"forward": 0')
    if msg=$(same "$plan" "$run"); then pass "$arch plan = run for $layout: $msg"; else fail "$arch plan != run for $layout: $msg"; fi
  done <<LAYOUTS
--tp 2 --ep|$T
--tp 2 --dp 2 --ep --sp --deterministic|$T,0
LAYOUTS
done

# The human-readable plan names states, groups and totals.
out=$("$MOERUN" plan -m "$d" -p 16 --tp 2 --ep --sp 2>&1)
if grep -q "Complete(token-shard of tp)" <<<"$out" && grep -q "totals per forward pass" <<<"$out" &&
  grep -q "all_gather(tp)" <<<"$out"; then
  pass "plan text lists states and totals"
else
  fail "plan text: $out"
fi

# Impossible layouts: plan refuses with the runner's message.
for bad in "--tp 3" "--tp 2 --sp" "--ep --dp 3" "--dispatch alltoall --dp 2"; do
  # shellcheck disable=SC2086
  perr=$("$MOERUN" plan -m "$d" $bad 2>&1 >/dev/null) && { fail "plan accepted $bad"; continue; }
  # shellcheck disable=SC2086
  rerr=$("$MOERUN" logits -m "$d" --tokens 5 -o "$WORK/x.st" $bad 2>&1 >/dev/null) && { fail "run accepted $bad"; continue; }
  msg=$(sed -n 's/^moerun: error: //p' <<<"$perr" | head -1)
  if [[ -n $msg ]] && grep -qF -- "$msg" <<<"$rerr"; then pass "$bad refused by both: $msg"; else fail "$bad: plan '$perr' vs run '$rerr'"; fi
done

# A GGUF's metadata give the same plan as config.json.
/usr/bin/python3 "$ROOT/tests/tokenizer/testdata/place_synthetic_tokenizer.py" "$d"
if "$MOERUN" convert-gguf -m "$d" -o "$WORK/lite.gguf" --type f32 >/dev/null 2>&1 &&
  [[ $("$MOERUN" plan -m "$WORK/lite.gguf" --tp 2 --ep --sp --json) == "$("$MOERUN" plan -m "$d" --tp 2 --ep --sp --json)" ]]; then
  pass "plan of the GGUF = plan of the directory"
else
  fail "plan of the GGUF"
fi

if "$MOERUN" plan -m "$WORK/missing" 2>/dev/null; then fail "plan of a missing model"; else pass "missing config.json refused"; fi

echo "plan: $failures failure(s)"
[[ $failures -eq 0 ]]
