# Shared by the model end-to-end scripts (model_test.sh, qwen3_moe_test.sh, gqa_family_test.sh): MOERUN, HERE, ROOT,
# PY, a WORK dir removed on exit, pass/fail counters, and compare A B TOL MIN: max |A - B| <= TOL *
# max |B| over all logits of two logits.safetensors files, and argmax agreement >= MIN; the
# bad-input checks expect_error and bad.
# Source it after `set -uo pipefail`, with HERE set to the sourcing script's folder.
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

compare() {
  $PY - "$1" "$2" "$3" "$4" <<'PY'
import json, struct, sys
import numpy as np
def read(p):
    d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n]); b = d[8 + n:]
    v = h["logits"]; o = v["data_offsets"]
    return np.frombuffer(b[o[0]:o[1]], dtype=np.float32).reshape(v["shape"])
a, r = read(sys.argv[1]), read(sys.argv[2])
tol, min_agree = float(sys.argv[3]), float(sys.argv[4])
err = float(np.abs(a - r).max()); scale = float(np.abs(r).max()); agree = float((a.argmax(1) == r.argmax(1)).mean())
print(f"maxdiff {err:.3g} (scale {scale:.3g}), argmax agreement {agree:.2f}")
sys.exit(0 if a.shape == r.shape and err <= tol * scale and agree >= min_agree else 1)
PY
}

# check_ref NAME DIR (GQA families: qwen2_moe, mixtral, olmoe, qwen3_moe): the model's logits for
# the caller's $TOKENS, exact (f32 activations), within 1e-4 of the float64 reference
# (ref_gqa_moe.py), and decode equal to prefill.
check_ref() {
  local name=$1 d=$2 msg
  $PY "$HERE/ref_gqa_moe.py" "$d" --tokens "$TOKENS" --output "$d.ref" --quiet
  "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.exact" --precision f32 2>/dev/null
  if msg=$(compare "$d.exact" "$d.ref" 1e-4 1.0); then pass "$name exact: $msg"; else fail "$name exact: $msg"; fi
  "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.decode" --decode --precision f32 2>/dev/null
  if msg=$(compare "$d.decode" "$d.exact" 1e-6 1.0); then pass "$name decode=prefill: $msg"; else fail "$name decode: $msg"; fi
}

# write_arith_task FILE N: N "a+b=" problems (seeded) as an eval task, one JSON object per line.
write_arith_task() {
  $PY - "$1" "$2" <<'PY'
import json, random, sys
r = random.Random(3)
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2])):
        a, b = r.randint(0, 99), r.randint(0, 99)
        f.write(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
PY
}

# expect_error NAME NEEDLE -- CMD...: CMD fails cleanly (exit in 1..127, no crash) and its stderr
# holds NEEDLE.
expect_error() {
  local name=$1 needle=$2
  shift 3
  local err
  err=$("$@" 2>&1 >/dev/null)
  local rc=$?
  if [[ $rc -ne 0 && $rc -lt 128 ]] && grep -qF -- "$needle" <<<"$err"; then pass "$name: $needle ($(tail -1 <<<"$err"))"; else fail "$name (rc $rc): $err"; fi
}

# bad NAME NEEDLE PYTHON-EDIT: a copy of the model dir $d with config.json edited (`c` is the
# config dict) must make `logits` (on ids ${BAD_TOKENS:-5}) fail with NEEDLE.
bad() {
  cp -r "$d" "$WORK/bad"
  $PY - "$WORK/bad/config.json" "$3" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))
PY
  expect_error "$1" "$2" -- "$MOERUN" logits -m "$WORK/bad" --tokens "${BAD_TOKENS:-5}" -o "$WORK/x.st"
  rm -rf "$WORK/bad"
}
