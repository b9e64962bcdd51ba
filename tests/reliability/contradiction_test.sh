#!/usr/bin/env bash
# Reliability §5: silent contradictions become errors naming the field and the bound: an
# activation other than SiLU, rope_scaling that is not an object, a num_hidden_layers that would
# drop checkpoint layers, special token ids outside the vocabulary, logits / eval past
# max_position_embeddings (as generate already refused), and lenient flag parses.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

# config_case NAME NEEDLE PYTHON-EDIT: a tiny-model copy with config.json edited must be refused.
config_case() {
  local d="$WORK/case"
  rm -rf "$d"
  tiny_copy "$d"
  edit_config "$d" "$3"
  expect_fail_within "$1" "$2" 20 -- "$MOERUN" logits -m "$d" --tokens 1,2 -o "$WORK/x.st" -t 1
}

config_case "hidden_act gelu" "hidden_act 'gelu' is not supported" 'c["hidden_act"] = "gelu"'
config_case "rope_scaling as a string" "field 'rope_scaling' must be an object" 'c["rope_scaling"] = "yarn"'
config_case "num_hidden_layers below the checkpoint" "num_hidden_layers 3 is smaller than the checkpoint's 4 layers" \
  'c["num_hidden_layers"] = 3'
config_case "eos_token_id >= vocab_size" "eos_token_id 264 is not below vocab_size 264" 'c["eos_token_id"] = 264'
config_case "bos_token_id >= vocab_size" "bos_token_id 300 is not below vocab_size 264" 'c["bos_token_id"] = 300'

# Past max_position_embeddings: logits and eval refuse as generate does (the engine's check at
# Submit; already so before issue 12's fixes, kept as regression cases).
d="$WORK/short"
tiny_copy "$d"
edit_config "$d" 'c["max_position_embeddings"] = 8'
expect_fail_within "logits past max_position_embeddings" "context 9 exceeds max_position_embeddings 8" 20 -- \
  "$MOERUN" logits -m "$d" --tokens 1,2,3,4,5,6,7,8,9 -o "$WORK/x.st" -t 1
printf '{"prompt": "12+34=", "answer": "46"}\n' >"$WORK/task.jsonl"
expect_fail_within "eval past max_position_embeddings" "context 11 exceeds max_position_embeddings 8" 20 -- \
  "$MOERUN" eval -m "$d" --task "$WORK/task.jsonl" --max-new 4 -t 1
expect_fail_within "generate past max_position_embeddings" "exceeds max_position_embeddings 8" 20 -- \
  "$MOERUN" generate -m "$d" --tokens 1,2,3 -n 8 -t 1

# Lenient parses.
expect_fail_within "--tokens 1,,2" "item 2 of '1,,2' is empty" 20 -- \
  "$MOERUN" logits -m "$TINY" --tokens 1,,2 -o "$WORK/x.st" -t 1
expect_fail_within "--tokens 1,2," "ends with a comma" 20 -- \
  "$MOERUN" logits -m "$TINY" --tokens 1,2, -o "$WORK/x.st" -t 1
expect_fail_within "generate -c -5" "--ctx-size: must be an integer >= 0, got -5" 20 -- "$MOERUN" generate -m "$TINY" --tokens 1,2 -c -5 -t 1
expect_fail_within "generate --seed -1" "--seed: must be an integer >= 0, got -1" 20 -- "$MOERUN" generate -m "$TINY" --tokens 1,2 --seed -1 -t 1
expect_fail_within "generate -n -3" "--n-predict: must be an integer >= 0, got -3" 20 -- "$MOERUN" generate -m "$TINY" --tokens 1,2 -n -3 -t 1
expect_fail_within "eval --batch 0" "--batch: must be an integer >= 1, got 0" 20 -- "$MOERUN" eval -m "$TINY" --task "$WORK/task.jsonl" --batch 0
finish
