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
expect_fail_within "mpirun: a rank stopped before MPI_Init" "MPI_Init did not complete within 3000 ms" 60 -- \
  "${MPIRUN[@]}" -np 2 bash -c '[[ $OMPI_COMM_WORLD_RANK == 1 ]] && kill -STOP $$; exec "$@"' _ \
  "$MOERUN" logits -m "$TINY" --tokens 1,2 -o "$WORK/x.st" --tp 2 -t 1 --collective-timeout 3

# 2. Rank 1 stops (SIGSTOP) before collective #8 of logits --tp 2: rank 0 fails within the deadline.
out=$(timeout -s KILL 60 "${MPIRUN[@]}" -np 2 "$MOERUN" logits -m "$TINY" --tokens 1,2,3 -o "$WORK/x.st" --tp 2 -t 1 \
  --collective-timeout 3 --fault-stall-rank 1 --fault-stall-at 8 2>&1 </dev/null)
rc=$?
cpu=$(grep -o 'waiting used [0-9.]* s of CPU' <<<"$out" | head -n 1 | grep -o '[0-9.]*')
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "no completion within 3000 ms \[collective #8 of this rank: layer " <<<"$out" &&
    [[ -n $cpu ]] && $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) < 0.15 else 1)" "$cpu"; then
  pass "mpirun: a rank stopped mid-forward: rc $rc; $(grep -o 'all_[a-z_]* on group.*CPU)' <<<"$out" | head -n 1); waiting rank CPU ${cpu} s of 3 s"
else
  fail "mpirun: a rank stopped mid-forward: rc $rc, cpu '$cpu': $out"
fi

# 3. The same stall on generate and eval (the deadline reaches every command under mpirun too).
printf '{"prompt": "1+1=", "answer": "2"}\n' >"$WORK/task.jsonl"
expect_fail_within "mpirun: generate with a stalled rank" "within 3000 ms [collective #" 60 -- \
  "${MPIRUN[@]}" -np 2 "$MOERUN" generate -m "$TINY" --tokens 1,2,3 -n 4 --tp 2 -t 1 --collective-timeout 3 \
  --fault-stall-rank 1 --fault-stall-at 12
expect_fail_within "mpirun: eval with a stalled rank" "within 3000 ms [collective #" 60 -- \
  "${MPIRUN[@]}" -np 2 "$MOERUN" eval -m "$TINY" --task "$WORK/task.jsonl" --tp 2 -t 1 --collective-timeout 3 \
  --fault-stall-rank 1 --fault-stall-at 12

# 4. stdout on a full disk under mpirun.
expect_fail_within "mpirun: generate > /dev/full" "writing standard output failed" 60 -- \
  bash -c 'exec "$@" >/dev/full' _ "${MPIRUN[@]}" -np 2 "$MOERUN" generate -m "$TINY" --tokens 1,2 -n 4 --tp 2 -t 1

# 5. The model file truncated under a running mpirun job (both ranks map it).
rm -rf "$WORK/trunc"
tiny_copy "$WORK/trunc"
"${MPIRUN[@]}" -np 2 "$MOERUN" bench -m "$WORK/trunc" -p 8 -n 8 -r 1000000 --tp 2 -t 1 >/dev/null 2>"$WORK/bus.err" </dev/null &
pid=$!
for _ in $(seq 600); do grep -q "loaded in" "$WORK/bus.err" && break; sleep 0.1; done
sleep 0.5
header=$($PY -c "import struct,sys; print(8 + struct.unpack('<Q', open(sys.argv[1],'rb').read(8))[0])" \
  "$WORK/trunc/model.safetensors")
t0=$(now)
truncate -s "$header" "$WORK/trunc/model.safetensors"
timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid"
wait "$pid"
rc=$?
secs=$(elapsed "$t0")
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "model.safetensors changed while mapped" "$WORK/bus.err"; then
  pass "mpirun: model file truncated under the job [$secs s] rc $rc: $(grep -o 'moerun: error: .*changed while mapped' "$WORK/bus.err" | head -n 1)"
else
  fail "mpirun: model file truncated: rc $rc: $(tail -c 600 "$WORK/bus.err")"
fi
finish
