# Shared by the reliability scripts (tests/reliability/*_test.sh, ctest label `reliability`): the
# model scripts' helpers (tests/model/common.sh: MOERUN, ROOT, PY, WORK, pass/fail, expect_error,
# bad) plus timed checks. Every case prints one line the report (scripts/reliability_report.py)
# reads:  PASS: <case> [<seconds> s] ...   or   FAIL: <case> [<seconds> s] ... (the bracket ends the
# case name, which may itself hold ": "; a FAIL line without it is split at its first ": ").
# Source it after `set -uo pipefail`, with HERE set to the sourcing script's folder.
# shellcheck source=../model/common.sh
source "$HERE/../model/common.sh"
TINY="$ROOT/models/tiny-arith"
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none --mca btl self,vader)

now() { date +%s.%N; }
elapsed() { $PY -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

# expect_fail_within NAME NEEDLE SECONDS -- CMD...: CMD ends within SECONDS (killed otherwise), with
# an exit code in 1..123 (not a timeout, not a signal) and NEEDLE on stdout or stderr.
expect_fail_within() {
  local name=$1 needle=$2 limit=$3
  shift 4
  local t0 out rc secs
  t0=$(now)
  out=$(timeout -s KILL "$limit" "$@" 2>&1 </dev/null)
  rc=$?
  secs=$(elapsed "$t0")
  if [[ $rc -eq 137 ]]; then fail "$name [$secs s] still running after $limit s (killed)"; return; fi
  if [[ $rc -eq 0 ]]; then fail "$name [$secs s] exit 0: $out"; return; fi
  if [[ $rc -ge 124 ]]; then fail "$name [$secs s] exit $rc (crash/signal): $out"; return; fi
  if ! grep -qF -- "$needle" <<<"$out"; then fail "$name [$secs s] output lacks '$needle' (rc $rc): $out"; return; fi
  pass "$name [$secs s] rc $rc: $(grep -F -- "$needle" <<<"$out" | head -n 1 | cut -c1-300)"
}

# signal_when_ready PID ERRFILE NEEDLE SIG [SETTLE]: once ERRFILE holds NEEDLE (then SETTLE s more,
# default 0.5), sends SIG to PID (a child of this shell) and waits for it to end (at most 30 s, then
# SIGKILL); sets rc (its exit code) and secs (from the signal to its end).
signal_when_ready() {
  local pid=$1 err=$2 needle=$3 sig=$4 settle=${5:-0.5} t0
  for _ in $(seq 300); do grep -q -- "$needle" "$err" && break; sleep 0.1; done
  sleep "$settle"
  t0=$(now)
  kill "-$sig" "$pid"
  timeout 30 tail --pid="$pid" -f /dev/null || kill -KILL "$pid"
  wait "$pid"
  rc=$?
  secs=$(elapsed "$t0")
}

# tiny_copy DIR: a copy of the committed tiny model (config, weights, tokenizer).
tiny_copy() {
  mkdir -p "$1"
  cp "$TINY"/config.json "$TINY"/model.safetensors "$TINY"/tokenizer.json "$TINY"/tokenizer_config.json "$1"/
}

# edit_config DIR PYTHON: runs PYTHON on DIR/config.json's dict `c` and writes it back.
edit_config() {
  $PY - "$1/config.json" "$2" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))
PY
}

# sigbus_case NAME CMD...: CMD runs on $WORK/trunc (a tiny-model copy); once it has loaded,
# model.safetensors is cut to its header. CMD must exit within 60 s, non-zero, naming the file.
sigbus_case() {
  local name=$1
  shift
  rm -rf "$WORK/trunc"
  tiny_copy "$WORK/trunc"
  "$@" >/dev/null 2>"$WORK/bus.err" </dev/null &
  local pid=$! rc
  for _ in $(seq 600); do grep -q "loaded in" "$WORK/bus.err" && break; sleep 0.1; done
  sleep 0.5
  local header
  header=$($PY -c "import struct,sys; print(8 + struct.unpack('<Q', open(sys.argv[1],'rb').read(8))[0])" \
    "$WORK/trunc/model.safetensors")
  local t0
  t0=$(now)
  truncate -s "$header" "$WORK/trunc/model.safetensors"
  timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid"
  wait "$pid"
  rc=$?
  local secs
  secs=$(elapsed "$t0")
  if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "model.safetensors changed while mapped" "$WORK/bus.err"; then
    pass "$name [$secs s] rc $rc: $(grep -o 'moerun: error: .*changed while mapped.*' "$WORK/bus.err" | head -n 1 | cut -c1-200)"
  else
    fail "$name [$secs s] rc $rc: $(tail -c 400 "$WORK/bus.err")"
  fi
}

finish() {
  if [[ $failures -ne 0 ]]; then
    echo "$failures failure(s)"
    exit 1
  fi
  echo "all passed"
}
