#!/usr/bin/env bash
# Reliability §4: memory stays bounded. Every text file read is capped (a /dev/zero symlink or a huge
# file is refused before it is read); sizes from config.json are bounded before anything is built
# from them; eval --max-new is bounded by max_position_embeddings; --max-memory refuses a run with
# its estimate; an allocation failure is a named error, never a bare std::bad_alloc.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

# 1. Reads of unbounded or oversized files.
d="$WORK/zero-config"
tiny_copy "$d"
ln -sf /dev/zero "$d/config.json"
expect_fail_within "config.json -> /dev/zero" "config.json: not a regular file" 20 -- \
  "$MOERUN" logits -m "$d" --tokens 1,2 -o "$WORK/x.st" -t 1
d="$WORK/zero-tokenizer"
tiny_copy "$d"
ln -sf /dev/zero "$d/tokenizer.json"
expect_fail_within "tokenizer.json -> /dev/zero" "tokenizer.json: not a regular file" 20 -- \
  "$MOERUN" tokenize -m "$d" -p "1+1="
expect_fail_within "tokenize -f /dev/zero" "/dev/zero: not a regular file" 20 -- \
  "$MOERUN" tokenize -m "$TINY" -f /dev/zero
truncate -s 300M "$WORK/huge.jsonl"  # sparse: no disk used
expect_fail_within "eval --task of 300 MB" "more than the 268435456 bytes a text file may have" 20 -- \
  "$MOERUN" eval -m "$TINY" --task "$WORK/huge.jsonl" -t 1
d="$WORK/huge-config"
tiny_copy "$d"
truncate -s 300M "$d/config.json"
expect_fail_within "config.json of 300 MB" "more than the 268435456 bytes" 20 -- \
  "$MOERUN" logits -m "$d" --tokens 1,2 -o "$WORK/x.st" -t 1

# 2. Sizes from config.json bounded before use.
d="$WORK/layers"
tiny_copy "$d"
edit_config "$d" 'c["num_hidden_layers"] = 1000000000'
expect_fail_within "num_hidden_layers = 1e9" "num_hidden_layers 1000000000 exceeds 1024" 10 -- \
  "$MOERUN" logits -m "$d" --tokens 1,2 -o "$WORK/x.st" -t 1
expect_fail_within "num_hidden_layers = 1e9 (--load-format dummy)" "num_hidden_layers 1000000000 exceeds 1024" 10 -- \
  "$MOERUN" logits -m "$d" --load-format dummy --tokens 1,2 -o "$WORK/x.st" -t 1

# 3. eval --max-new bounded by max_position_embeddings (1e8 would ask for 128 GB of cache).
printf '{"prompt": "1+1=", "answer": "2"}\n' >"$WORK/task.jsonl"
expect_fail_within "eval --max-new 100000000" "context 100000005 exceeds max_position_embeddings 1024" 20 -- \
  "$MOERUN" eval -m "$TINY" --task "$WORK/task.jsonl" --max-new 100000000 -t 1

# 4. --max-memory: refused up front with the estimate.
expect_fail_within "logits --max-memory 1M" "more than --max-memory 1048576 bytes" 20 -- \
  "$MOERUN" logits -m "$TINY" --tokens 1,2,3 -o "$WORK/x.st" -t 1 --max-memory 1MB
expect_fail_within "generate -c 1000 --max-memory 3MB (KV cache counted)" "KV cache" 20 -- \
  "$MOERUN" generate -m "$TINY" --tokens 1,2,3 -n 4 -c 1000 -t 1 --max-memory 3MB
t0=$(now)
if out=$("$MOERUN" logits -m "$TINY" --tokens 1,2,3 -o "$WORK/ok.st" -t 1 --max-memory 1G 2>&1); then
  pass "logits --max-memory 1G runs [$(elapsed "$t0") s] rc 0"
else
  fail "logits --max-memory 1G runs [$(elapsed "$t0") s] $out"
fi

# 5. An allocation failure is reported as out of memory, not as a bare std::bad_alloc: a 150 MB task
#    (under the 256 MB cap) read in a 400 MB address space.
$PY -c "
import json, sys
line = json.dumps({'prompt': '1+1=', 'answer': '2'}) + '\n'
open(sys.argv[1], 'w').write(line * (150_000_000 // len(line)))" "$WORK/task150.jsonl"
expect_fail_within "std::bad_alloc (eval of a 150 MB task, ulimit -v 400 MB)" "out of memory: an allocation failed" 60 -- \
  bash -c 'ulimit -v 400000; exec "$@"' _ "$MOERUN" eval -m "$TINY" --task "$WORK/task150.jsonl" -t 1
tiny_copy "$WORK/big"
edit_config "$WORK/big" 'c["vocab_size"] = 200000; c["hidden_size"] = 2048'
expect_fail_within "a tensor allocation failing (dummy 200000 x 2048 embedding, ulimit -v 400 MB)" "cannot allocate 819200000 bytes" 60 -- \
  bash -c 'ulimit -v 400000; exec "$@"' _ "$MOERUN" logits -m "$WORK/big" --load-format dummy --tokens 1 \
  -o "$WORK/x.st" -t 1
finish
