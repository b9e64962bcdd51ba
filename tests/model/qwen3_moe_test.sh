#!/usr/bin/env bash
# Whole Qwen3-MoE models (the second registered architecture, model/arch.h): moerun's logits
# against the independent float64 numpy reference (tests/model/ref_gqa_moe.py) on tiny random
# checkpoints (tools/make_test_model.py --arch qwen3_moe), f32 and bf16, single and sharded;
# dense layers (mlp_only_layers, decoder_sparse_step) and tied embeddings; prefill equals decode;
# --deterministic logits bitwise equal on every layout; generate / eval / inspect end to end;
# unsupported configs refused with one clear error.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

if $PY "$HERE/ref_gqa_moe.py" --self-test >/dev/null 2>&1; then pass "reference self-test (rotate-half RoPE, router, layer rule)"; else fail "reference self-test"; fi

TOKENS=5,17,3,99,42,7,8,200,1,0,33,150,12,13,14,15,16,17,18,19,20,21,22,23
make() { $PY "$ROOT/tools/make_test_model.py" "$@" --arch qwen3_moe >/dev/null 2>&1; }
for dtype in f32 bf16; do
  for shards in 1 3; do
    d="$WORK/q-$dtype-$shards"
    make "$d" --dtype "$dtype" --shards "$shards"
    check_ref "qwen3_moe $dtype shards=$shards" "$d"
    "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.auto" 2>/dev/null
    if msg=$(compare "$d.auto" "$d.ref" 0.35 0.85); then pass "qwen3_moe $dtype shards=$shards auto: $msg"; else fail "qwen3_moe $dtype shards=$shards auto: $msg"; fi
  done
done
make "$WORK/q-dense" --qwen-mlp-only-layers 0 --tie-embeddings
check_ref "qwen3_moe mlp_only_layers=[0] tied embeddings" "$WORK/q-dense"
make "$WORK/q-step" --qwen-decoder-sparse-step 2 --layers 4
check_ref "qwen3_moe decoder_sparse_step=2" "$WORK/q-step"

# Quantised at load: within the DeepSeek bounds of model_test.sh.
d="$WORK/q-f32-1"
for spec in "f16|2e-3|1.0" "q8_0|0.06|0.9" "q4_0|0.6|0.5"; do
  IFS='|' read -r fmt tol agree <<<"$spec"
  "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.q" --weight-format "$fmt" --precision f32 2>/dev/null
  if msg=$(compare "$d.q" "$d.ref" "$tol" "$agree"); then pass "--weight-format $fmt: $msg"; else fail "--weight-format $fmt: $msg"; fi
done

# Layouts on in-process ranks (8 query heads, 4 KV heads — replicated on --tp 8 —, 16 experts): --deterministic logits are
# bitwise equal to one rank's; fast mode stays within f32 rounding; greedy tokens are the same.
LAYOUTS=("--tp 2" "--tp 4" "--tp 8" "--tp 2 --ep" "--dp 2" "--dp 2 --ep --dispatch alltoall" "--tp 2 --dp 2 --ep --sp"
  "--tp 2 --dp 2 --ep --dispatch alltoall" "--tp 4 --dp 2 --ep --sp" "--tp 2 --shared-replicated")
d="$WORK/q-bf16-3"
"$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.det1" --deterministic 2>/dev/null
g_ref=$("$MOERUN" generate -m "$d" --tokens 5,17,3 -n 6 --precision f32 2>/dev/null)
for layout in "${LAYOUTS[@]}"; do
  # shellcheck disable=SC2086
  "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.detx" --deterministic $layout 2>/dev/null
  if [[ -s $d.det1 ]] && cmp -s "$d.det1" "$d.detx"; then pass "$layout --deterministic: bitwise"; else fail "$layout --deterministic differs"; fi
  # shellcheck disable=SC2086
  "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.fast" --precision f32 $layout 2>/dev/null
  if msg=$(compare "$d.fast" "$d.ref" 1e-4 1.0); then pass "$layout fast: $msg"; else fail "$layout fast: $msg"; fi
  # shellcheck disable=SC2086
  g=$("$MOERUN" generate -m "$d" --tokens 5,17,3 -n 6 --precision f32 $layout 2>/dev/null)
  if [[ -n $g && $g == "$g_ref" ]]; then pass "$layout generate: $g"; else fail "$layout generate: '$g' vs '$g_ref'"; fi
done

# Text in, text out; eval on every layout gives the same answers.
tm="$WORK/q-tok"
make "$tm" --vocab 305 --tokenizer-dir "$ROOT/tests/tokenizer/testdata/synthetic"
a=$("$MOERUN" generate -m "$tm" -p "hello world" -n 6 --print-ids 2>/dev/null)
ids=$("$MOERUN" tokenize -m "$tm" -p "hello world")
b=$("$MOERUN" generate -m "$tm" --tokens "$ids" -n 6 --print-ids 2>/dev/null)
if [[ -n $a && $a == "$b" ]]; then pass "generate -p == generate --tokens: $a"; else fail "generate: a=$a b=$b"; fi
if "$MOERUN" generate -m "$tm" -p "hello" -n 4 >/dev/null 2>&1; then pass "generate text runs"; else fail "generate text"; fi
write_arith_task "$WORK/task.jsonl" 12
last=$("$MOERUN" eval -m "$tm" --task "$WORK/task.jsonl" --max-new 4 --answers "$WORK/ans1" --deterministic 2>/dev/null | tail -1)
if [[ $last =~ ^accuracy:\ [0-9.]+\ \([0-9]+/12\)$ ]]; then pass "eval prints '$last'"; else fail "eval last line: '$last'"; fi
for layout in "--tp 2" "--dp 2 --batch 5" "--tp 2 --dp 2 --ep --sp"; do
  # shellcheck disable=SC2086
  "$MOERUN" eval -m "$tm" --task "$WORK/task.jsonl" --max-new 4 --answers "$WORK/ans2" --deterministic $layout >/dev/null 2>&1
  if cmp -s "$WORK/ans1" "$WORK/ans2"; then pass "eval $layout: same answers"; else fail "eval $layout: answers differ"; fi
done
out=$("$MOERUN" inspect -m "$WORK/q-bf16-3" 2>/dev/null)
if grep -q "validation: OK" <<<"$out" && grep -q "model.layers.1.self_attn.k_norm.weight | BF16 | \[16\]" <<<"$out"; then
  pass "inspect"
else
  fail "inspect: $out"
fi
if "$MOERUN" bench -m "$d" -p 8 -n 4 -r 1 >/dev/null 2>&1; then pass "bench runs"; else fail "bench"; fi
if "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$WORK/dummy.st" --load-format dummy 2>/dev/null; then
  pass "--load-format dummy"
else
  fail "--load-format dummy"
fi

# Bad input: one clear error, exit != 0.
d="$WORK/q-f32-1"
expect_error "--tp 16 (8 query heads)" "--tp 16 does not divide num_attention_heads 8" -- \
  "$MOERUN" logits -m "$d" --tokens 5 -o "$WORK/x.st" --tp 16
expect_error "--tp 3" "--tp 3" -- \
  "$MOERUN" logits -m "$d" --tokens 5 -o "$WORK/x.st" --tp 3
bad "yarn rope_scaling" "rope_scaling type 'yarn' is not supported for qwen3_moe" \
  'c["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}'
bad "sliding window" "use_sliding_window = true is not supported" 'c["use_sliding_window"] = True'
bad "attention bias" "attention_bias = true is not supported" 'c["attention_bias"] = True'
bad "kv heads" "num_key_value_heads 3 does not divide num_attention_heads 8" 'c["num_key_value_heads"] = 3'
bad "head_dim vs weights" "has shape [16], expected [32] from config.json" 'c["head_dim"] = 32'
bad "unknown model_type" "model_type 'qwen9_moe' is not a supported architecture (expected one of deepseek_v2, deepseek_v3, qwen3_moe, qwen2_moe, mixtral, olmoe)" \
  'c["model_type"] = "qwen9_moe"'
# Qwen3-MoE GGUFs (llama.cpp qwen3moe; tests/model/gguf_gqa_test.sh) keep any known pre-tokenizer:
# this model carries DeepSeek LLM's, and the file tokenizes as the directory does.
if "$MOERUN" quantize -m "$tm" -o "$WORK/x.gguf" --type f32 2>/dev/null &&
  [[ $("$MOERUN" tokenize -m "$WORK/x.gguf" -p "hello world" 2>/dev/null) == "$ids" ]]; then
  pass "qwen3moe GGUF with DeepSeek LLM's pre-tokenizer tokenizes as the directory: $ids"
else
  fail "qwen3moe GGUF with DeepSeek LLM's pre-tokenizer"
fi

echo "qwen3_moe_test: $failures failure(s)"
exit $((failures > 0))
