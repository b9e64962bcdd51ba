#!/usr/bin/env bash
# Reliability §3 and §6 under real `mpirun` processes (Open MPI): a rank that never starts
# (stopped before MPI_Init) and a rank stopped (SIGSTOP) in the middle of a forward pass make the
# job end within the deadline, with a message naming MPI_Init, or the collective's sequence number
# and layer — and the waiting rank sleeps rather than spins (its CPU time is in the message); a
# model file truncated under the job ends it naming the file.
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
  fail "mpirun: a rank stopped mid-forward: rc $rc, cpu '$cpu': $out"
fi

# 3. The same stall on generate and eval (the deadline reaches every command under mpirun too).
printf '{"prompt": "1+1=", "answer": "2"}\n' >"$WORK/task.jsonl"
expect_fail_within "mpirun -np 2 generate: rank 1 SIGSTOPped (deadline 3 s)" "within 3000 ms [collective #" 60 -- \
  "${MPIRUN[@]}" -np 2 "$MOERUN" generate -m "$TINY" --tokens 1,2,3 -n 4 --tp 2 -t 1 --collective-timeout 3 \
  --fault-stall-rank 1 --fault-stall-at 14
expect_fail_within "mpirun -np 2 eval: rank 1 SIGSTOPped (deadline 3 s)" "within 3000 ms [collective #" 60 -- \
  "${MPIRUN[@]}" -np 2 "$MOERUN" eval -m "$TINY" --task "$WORK/task.jsonl" --tp 2 -t 1 --collective-timeout 3 \
  --fault-stall-rank 1 --fault-stall-at 14

# 4. The model file truncated under a running mpirun job (both ranks map it).
sigbus_case "mpirun: model file truncated under the job (SIGBUS)" \
  "${MPIRUN[@]}" -np 2 "$MOERUN" bench -m "$WORK/trunc" -p 8 -n 8 -r 1000000 --tp 2 -t 1
finish
