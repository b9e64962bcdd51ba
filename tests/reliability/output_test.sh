#!/usr/bin/env bash
# Reliability §6, in-process: results that cannot be written fail the run (stdout on a full disk,
# an unwritable --answers path found before computing); an interrupted eval writes the answers it
# has and says so; a killed writer's temporary file is removed by the next write; SIGTERM to
# in-process ranks ends the process with a last line naming rank 0's collective; a model file
# truncated under a running process ends it with a message naming the file (SIGBUS caught).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

# 1. stdout write errors.
expect_fail_within "generate > /dev/full" "writing standard output failed" 30 -- \
  bash -c 'exec "$@" >/dev/full' _ "$MOERUN" generate -m "$TINY" --tokens 1,2 -n 4 -t 1
expect_fail_within "tokenize > /dev/full" "writing standard output failed" 30 -- \
  bash -c 'exec "$@" >/dev/full' _ "$MOERUN" tokenize -m "$TINY" -p "1+1="
expect_fail_within "eval > /dev/full" "writing standard output failed" 60 -- \
  bash -c 'exec "$@" >/dev/full' _ "$MOERUN" eval -m "$TINY" --task "$TINY/heldout.jsonl" --max-new 4 -t 2

# 2. An unwritable --answers path is refused before any problem runs (a 6000-problem task: no
#    progress line may appear).
for _ in $(seq 10); do cat "$TINY/heldout.jsonl"; done >"$WORK/big.jsonl"
t0=$(now)
out=$("$MOERUN" eval -m "$TINY" --task "$WORK/big.jsonl" --answers "$WORK/no/such/dir/a.tsv" -t 2 2>&1 </dev/null)
rc=$?
secs=$(elapsed "$t0")
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -qF "cannot write '$WORK/no/such/dir/a.tsv'" <<<"$out" &&
    ! grep -q "eval \[" <<<"$out"; then
  pass "eval --answers in a missing directory, refused before computing [$secs s] rc $rc: $(grep -F 'cannot write' <<<"$out" | head -n 1)"
else
  fail "eval --answers in a missing directory, refused before computing [$secs s] rc $rc: $(tail -c 300 <<<"$out")"
fi

# 3. An interrupted eval writes the answers so far and exits non-zero saying so.
"$MOERUN" eval -m "$TINY" --task "$WORK/big.jsonl" --answers "$WORK/partial.tsv" --batch 4 -t 2 \
  >"$WORK/eval.out" 2>"$WORK/eval.err" &
signal_when_ready $! "$WORK/eval.err" "eval \[" INT 0
lines=$(wc -l <"$WORK/partial.tsv" 2>/dev/null || echo 0)
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "interrupted" "$WORK/eval.err" && [[ $lines -gt 0 && $lines -lt 6000 ]]; then
  pass "eval interrupted by SIGINT [$secs s] rc $rc: $lines of 6000 answers written; $(grep -o 'interrupted.*' "$WORK/eval.err" | tail -n 1)"
else
  fail "eval interrupted by SIGINT [$secs s] rc $rc, $lines answer lines, stderr: $(tail -c 400 "$WORK/eval.err")"
fi

# 4. A killed writer's temporary file (<path>.tmp.<dead pid>) is removed by the next write.
bash -c 'exit 0' &
dead=$!
wait "$dead"
touch "$WORK/out.st.tmp.$dead"
t0=$(now)
if "$MOERUN" logits -m "$TINY" --tokens 1,2 -o "$WORK/out.st" -t 1 2>/dev/null && [[ -f $WORK/out.st ]] &&
    [[ ! -e $WORK/out.st.tmp.$dead ]]; then
  pass "orphan <path>.tmp.<dead pid> removed by the next write [$(elapsed "$t0") s] rc 0: out.st.tmp.$dead gone, out.st written"
else
  fail "orphan <path>.tmp.<dead pid> removed by the next write [$(elapsed "$t0") s] left: $(ls "$WORK" | grep tmp)"
fi

# 5. SIGTERM to in-process ranks (--tp 2 --ep): the process ends by the signal, its last line naming
# rank 0's collective (core/signals.h).
"$MOERUN" bench -m "$TINY" -p 8 -n 0 -r 1000000 --tp 2 --ep -t 2 >/dev/null 2>"$WORK/term.err" </dev/null &
signal_when_ready $! "$WORK/term.err" "loaded in" TERM
last=$(tail -n 1 "$WORK/term.err")
if [[ $rc -eq 143 ]] && grep -Eq "^moerun: rank 0: SIGTERM received (during|while computing after) .*collective #[0-9]+( of this rank: | \()[a-z]" <<<"$last"; then
  pass "in-process ranks (--tp 2 --ep): SIGTERM [$secs s] rc $rc: $last"
else
  fail "in-process ranks (--tp 2 --ep): SIGTERM [$secs s] rc $rc, last line '$last'"
fi

# 6. The model file truncated under a running process: SIGBUS caught, the file named.
sigbus_case "model file truncated under bench (SIGBUS)" \
  "$MOERUN" bench -m "$WORK/trunc" -p 8 -n 8 -r 1000000 -t 2
finish
