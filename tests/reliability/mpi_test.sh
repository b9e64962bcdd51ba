#!/usr/bin/env bash
# Reliability §3, §6 and §7 under real `mpirun` processes (Open MPI): a rank that never starts
# (stopped before MPI_Init) and a rank stopped (SIGSTOP) in the middle of a forward pass make the
# job end within the deadline, with a message naming MPI_Init, or the collective's sequence number
# and layer — and the waiting rank sleeps rather than spins (its CPU time is in the message);
# SIGTERM / SIGINT to mpirun and a killed rank end every process within 10 s, each rank's last line
# naming its collective (core/signals.h); an interrupted eval under mpirun writes its answers so
# far; a model file truncated under the job ends it naming the file.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

# 1. Rank 1 stopped before it execs moerun: rank 0 must not wait in MPI_Init forever.
expect_fail_within "mpirun -np 2: rank 1 stopped before MPI_Init (deadline 3 s)" "MPI_Init did not complete within 3000 ms" 60 -- \
  "${MPIRUN[@]}" -np 2 bash -c '[[ $OMPI_COMM_WORLD_RANK == 1 ]] && kill -STOP $$; exec "$@"' _ \
  "$MOERUN" logits -m "$TINY" --tokens 1,2 -o "$WORK/x.st" --tp 2 -t 1 --collective-timeout 3

# 2. Rank 1 stops (SIGSTOP) before collective #10 of logits --tp 2 (#1-#2: the start-up agreement): rank 0 fails within the deadline.
t0=$(now)
out=$(timeout -s KILL 60 "${MPIRUN[@]}" -np 2 "$MOERUN" logits -m "$TINY" --tokens 1,2,3 -o "$WORK/x.st" --tp 2 -t 1 \
  --collective-timeout 3 --fault-stall-rank 1 --fault-stall-at 10 2>&1 </dev/null)
rc=$?
secs=$(elapsed "$t0")
cpu=$(grep -o 'waiting used [0-9.]* s of CPU' <<<"$out" | head -n 1 | grep -o '[0-9.]*')
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "no completion within 3000 ms \[collective #10 of this rank: layer " <<<"$out" &&
    [[ -n $cpu ]] && $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) < 0.15 else 1)" "$cpu"; then
  pass "mpirun -np 2 logits: rank 1 SIGSTOPped before collective #10 (deadline 3 s) [$secs s] rc $rc: waiting rank used ${cpu} s of CPU in 3 s; $(grep -o 'all_[a-z_]* on group.*CPU)' <<<"$out" | head -n 1)"
else
  fail "mpirun -np 2 logits: rank 1 SIGSTOPped before collective #10 (deadline 3 s) [$secs s] rc $rc, cpu '$cpu': $out"
fi

# 3. The same stall on generate and eval (the deadline reaches every command under mpirun too).
printf '{"prompt": "1+1=", "answer": "2"}\n' >"$WORK/task.jsonl"
expect_fail_within "mpirun -np 2 generate: rank 1 SIGSTOPped (deadline 3 s)" "within 3000 ms [collective #" 60 -- \
  "${MPIRUN[@]}" -np 2 "$MOERUN" generate -m "$TINY" --tokens 1,2,3 -n 4 --tp 2 -t 1 --collective-timeout 3 \
  --fault-stall-rank 1 --fault-stall-at 14
expect_fail_within "mpirun -np 2 eval: rank 1 SIGSTOPped (deadline 3 s)" "within 3000 ms [collective #" 60 -- \
  "${MPIRUN[@]}" -np 2 "$MOERUN" eval -m "$TINY" --task "$WORK/task.jsonl" --tp 2 -t 1 --collective-timeout 3 \
  --fault-stall-rank 1 --fault-stall-at 14

# signal_case NAME TARGET SIG NEEDLE_REGEX WORDS -- CMD...: CMD (an mpirun job on $WORK/sig, a copy of
# the tiny model) runs until it has loaded plus 1 s; then TARGET (mpirun, or rank1: that rank's
# process) gets SIG. Every process must be gone within 10 s of the signal, the exit non-zero, and
# the last line of each rank in WORDS ("rank 0" ...) that printed one match NEEDLE_REGEX; at least
# one must have (mpirun may SIGKILL a rank before its SIGTERM arrives once another rank has ended).
signal_case() {
  local name=$1 target=$2 sig=$3 needle=$4
  shift 4
  local ranks=()
  while [[ $1 != -- ]]; do ranks+=("$1"); shift; done
  shift
  rm -rf "$WORK/sig" "$WORK"/rank*.pid
  tiny_copy "$WORK/sig"
  "${MPIRUN[@]}" -np 2 bash -c 'echo $$ >"$0/rank$OMPI_COMM_WORLD_RANK.pid"; exec "$@"' "$WORK" "$@" \
    >"$WORK/sig.out" 2>"$WORK/sig.err" </dev/null &
  local pid=$! rc t0 secs left line missing=""
  for _ in $(seq 300); do grep -q "loaded in" "$WORK/sig.err" && break; sleep 0.1; done
  sleep 1
  t0=$(now)
  if [[ $target == mpirun ]]; then kill "-$sig" "$pid"; else kill "-$sig" "$(cat "$WORK/${target}.pid")"; fi
  timeout 30 tail --pid="$pid" -f /dev/null || kill -KILL "$pid"
  wait "$pid"
  rc=$?
  secs=$(elapsed "$t0")
  sleep 0.2
  left=$(pgrep -f -- "$WORK/sig" | tr '\n' ' ')
  local found=""
  for r in "${ranks[@]}"; do
    line=$(grep "^moerun: $r:" "$WORK/sig.err" | tail -n 1)
    [[ -z $line ]] && continue
    if grep -Eq -- "$needle" <<<"$line"; then found+=" $r"; else missing+=" [$r: '$line']"; fi
  done
  [[ -z $found ]] && missing+=" [no rank's line]"
  if [[ $rc -ne 0 && -z $left && -z $missing ]] && $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) < 10 else 1)" "$secs"; then
    pass "$name [$secs s] rc $rc: lines from$found; $(grep -E "^moerun: rank [0-9]+: SIG" "$WORK/sig.err" | tail -n 1 | cut -c1-200)"
  else
    fail "$name [$secs s] rc $rc, processes left '$left', lines missing$missing: $(tail -c 600 "$WORK/sig.err")"
  fi
}

# 4. SIGTERM / SIGINT to mpirun (which forwards SIGTERM to every rank), and a rank killed: every
# process ends within 10 s, each rank's last line naming its collective (op, group, sequence number,
# layer or stage, e.g. "lm_head logits") — in flight, or the last one before the computation it was in.
AT='SIGTERM received (during [a-z_]+ on group .[a-z]+. \[collective #[0-9]+ of this rank: [a-z]|while computing after collective #[0-9]+ \([a-z])'
# (-n 0: prompt steps only, so the signal lands in the model's collectives; with -n 8 it may land
# in bench's read-bandwidth probe between tg runs, which is named the same way.)
signal_case "mpirun -np 2 bench: SIGTERM to mpirun" mpirun TERM "$AT" "rank 0" "rank 1" -- \
  "$MOERUN" bench -m "$WORK/sig" -p 8 -n 0 -r 1000000 --tp 2 -t 1
signal_case "mpirun -np 2 bench --tp 2 --ep: SIGINT to mpirun" mpirun INT "$AT" "rank 0" "rank 1" -- \
  "$MOERUN" bench -m "$WORK/sig" -p 8 -n 8 -r 1000000 --tp 2 --ep -t 1
signal_case "mpirun -np 2 bench: rank 1 killed (SIGKILL)" rank1 KILL "$AT" "rank 0" -- \
  "$MOERUN" bench -m "$WORK/sig" -p 8 -n 8 -r 1000000 --tp 2 -t 1

# 5. eval under mpirun, SIGTERM to mpirun: rank 0 writes the answers so far, the other ranks follow
# it to the end (no abort), the job exits non-zero saying "interrupted".
for _ in $(seq 10); do cat "$TINY/heldout.jsonl"; done >"$WORK/big.jsonl"
rm -f "$WORK/partial.tsv"
"${MPIRUN[@]}" -np 2 "$MOERUN" eval -m "$TINY" --task "$WORK/big.jsonl" --answers "$WORK/partial.tsv" --batch 4 \
  --tp 2 -t 1 >"$WORK/eval.out" 2>"$WORK/eval.err" </dev/null &
signal_when_ready $! "$WORK/eval.err" "eval \[" TERM
lines=$(wc -l <"$WORK/partial.tsv" 2>/dev/null || echo 0)
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "interrupted" "$WORK/eval.err" && [[ $lines -gt 0 && $lines -lt 6000 ]] &&
    $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) < 10 else 1)" "$secs"; then
  pass "mpirun -np 2 eval: SIGTERM to mpirun [$secs s] rc $rc: $lines of 6000 answers written; $(grep -o 'interrupted (.*' "$WORK/eval.err" | tail -n 1)"
else
  fail "mpirun -np 2 eval: SIGTERM to mpirun [$secs s] rc $rc, $lines answer lines: $(tail -c 600 "$WORK/eval.err")"
fi

# 6. The model file truncated under a running mpirun job (both ranks map it).
sigbus_case "mpirun: model file truncated under the job (SIGBUS)" \
  "${MPIRUN[@]}" -np 2 "$MOERUN" bench -m "$WORK/trunc" -p 8 -n 8 -r 1000000 --tp 2 -t 1
finish
