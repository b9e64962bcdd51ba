#!/usr/bin/env bash
# Reliability §3, in-process: no blocking point without a deadline. A FIFO as config.json, as the
# weights file or as the index is refused at once (never opened for a blocking read); thread
# creation failing part-way is an error, not a deadlock; a rank that stops in a collective makes
# every command fail within --collective-timeout, naming the collective's sequence number and layer.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

# 1. FIFOs where regular files belong.
for what in config.json model.safetensors model.safetensors.index.json; do
  d="$WORK/fifo-$what"
  tiny_copy "$d"
  if [[ $what == *index* ]]; then rm "$d/model.safetensors"; fi
  rm -f "$d/$what"
  mkfifo "$d/$what"
  expect_fail_within "FIFO as $what" "$what: not a regular file" 20 -- \
    "$MOERUN" logits -m "$d" --tokens 1,2 -o "$WORK/x.st" -t 1
done
mkfifo "$WORK/task.fifo"
expect_fail_within "FIFO as eval --task" "task.fifo: not a regular file" 20 -- \
  "$MOERUN" eval --task "$WORK/task.fifo" -t 1

# 2. Thread creation failing part-way (-t 1024 with 8 MB stacks in a 2 GB address space).
expect_fail_within "thread creation fails part-way (-t 1024, ulimit -v 2 GB)" "lower -t/--threads" 60 -- \
  bash -c 'ulimit -v 2000000; exec "$@"' _ "$MOERUN" logits -m "$TINY" --tokens 1,2 -o "$WORK/x.st" -t 1024

# 3. --collective-timeout reaches every command: rank 1 stalls before a collective of the forward
#    pass; rank 0 fails within the deadline (1 s) naming the collective and its layer.
stall=(--tp 2 -t 2 --collective-timeout 1 --fault-stall-rank 1)
printf '{"prompt": "1+1=", "answer": "2"}\n' >"$WORK/task.jsonl"
expect_fail_within "logits --tp 2, rank 1 stalls before collective #10 (deadline 1 s)" "[collective #10 of this rank: layer 3 o_proj output]" 30 -- \
  "$MOERUN" logits -m "$TINY" --tokens 1,2,3 -o "$WORK/x.st" "${stall[@]}" --fault-stall-at 10
expect_fail_within "generate --tp 2, rank 1 stalls (deadline 1 s)" "within 1000 ms" 30 -- \
  "$MOERUN" generate -m "$TINY" --tokens 1,2,3 -n 4 "${stall[@]}" --fault-stall-at 14
expect_fail_within "eval --tp 2, rank 1 stalls (deadline 1 s)" "within 1000 ms" 30 -- \
  "$MOERUN" eval -m "$TINY" --task "$WORK/task.jsonl" "${stall[@]}" --fault-stall-at 14
expect_fail_within "bench --tp 2, rank 1 stalls (deadline 1 s)" "within 1000 ms" 60 -- \
  "$MOERUN" bench -m "$TINY" -p 4 -n 2 -r 1 "${stall[@]}" --fault-stall-at 14
"$MOERUN" make-example --out "$WORK/layer" --preset v2-lite --small --tokens 8 --dtype bf16 2>/dev/null
expect_fail_within "moe-layer --tp 2, rank 1 stalls (deadline 1 s)" "within 1000 ms" 30 -- \
  "$MOERUN" moe-layer --config "$WORK/layer/config.json" --weights "$WORK/layer/layer.safetensors" \
  --input "$WORK/layer/x.safetensors" --output "$WORK/y.st" "${stall[@]}" --fault-stall-at 4

finish
