#!/usr/bin/env bash
# Whole DeepSeek-V2-family models: moerun's logits against the independent float64 numpy
# reference (tests/model/ref_deepseek.py) for every variant (greedy / group-limited / noaux_tc,
# with and without q_lora), f32 and bf16, single and sharded checkpoints; prefill equals decode;
# bad checkpoints and bad requests fail with one clear error.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

if $PY "$HERE/ref_deepseek.py" --self-test >/dev/null 2>&1; then pass "reference self-test (YaRN inv_freq, mscale, RoPE, router)"; else fail "reference self-test"; fi

TOKENS=5,17,3,99,42,7,8,200,1,0,33,150,12,13,14,15,16,17,18,19,20,21,22,23
for variant in lite v2 v3; do
  for dtype in f32 bf16; do
    for shards in 1 3; do
      d="$WORK/$variant-$dtype-$shards"
      $PY "$ROOT/tools/make_test_model.py" "$d" --variant "$variant" --dtype "$dtype" --shards "$shards" >/dev/null
      $PY "$HERE/ref_deepseek.py" "$d" --tokens "$TOKENS" --output "$d.ref" >/dev/null 2>&1
      # Exact activations (--precision f32): only f32 rounding separates moerun from float64.
      "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.exact" --precision f32 2>/dev/null
      if msg=$(compare "$d.exact" "$d.ref" 2e-5 1.0); then pass "$variant $dtype shards=$shards exact: $msg"; else fail "$variant $dtype shards=$shards exact: $msg"; fi
      # Default (bf16 activations on the bf16-dot path for batches >= 8 rows): looser.
      "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.auto" 2>/dev/null
      if msg=$(compare "$d.auto" "$d.ref" 0.35 0.85); then pass "$variant $dtype shards=$shards auto: $msg"; else fail "$variant $dtype shards=$shards auto: $msg"; fi
      # Decode (one token at a time through the KV cache) equals prefill.
      "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.decode" --decode --precision f32 2>/dev/null
      if msg=$(compare "$d.decode" "$d.exact" 1e-6 1.0); then pass "$variant $dtype shards=$shards decode=prefill: $msg"; else fail "$variant $dtype shards=$shards decode: $msg"; fi
    done
  done
done

# Quantised at load (--weight-format) against the float64 reference on the f32 weights: the stated
# bounds are measured quantisation error x ~2 (lite: f16 7e-4, q8_0 2.6e-2, q4_0 0.31 of the logit
# scale). The model is 64 wide, so q6_k/q4_k fall back to q8_0 (256-element super-blocks).
d="$WORK/lite-f32-1"
for spec in "f16|2e-3|1.0" "q8_0|0.06|0.9" "q6_k|0.06|0.9" "q4_0|0.6|0.5" "q4_k|0.06|0.9"; do
  IFS='|' read -r fmt tol agree <<<"$spec"
  for kernel in ref ""; do
    "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.q" --weight-format "$fmt" --precision f32 ${kernel:+--kernel $kernel} 2>/dev/null
    if msg=$(compare "$d.q" "$d.ref" "$tol" "$agree"); then pass "lite --weight-format $fmt ${kernel:-auto}: $msg"; else fail "lite --weight-format $fmt ${kernel:-auto}: $msg"; fi
  done
done

# Layouts on in-process ranks: --deterministic logits are bitwise equal to one rank's; fast mode
# stays within f32 rounding of the reference; greedy tokens are the same everywhere.
LAYOUTS=("--tp 2" "--tp 4" "--tp 2 --ep" "--dp 2" "--dp 2 --ep --dispatch alltoall" "--tp 2 --dp 2 --ep --sp"
  "--tp 2 --dp 2 --ep --dispatch alltoall" "--tp 4 --dp 2 --ep --sp" "--tp 2 --shared-replicated")
for variant in lite v3; do
  d="$WORK/$variant-bf16-3"
  "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.det1" --deterministic 2>/dev/null
  g_ref=$("$MOERUN" generate -m "$d" --tokens 5,17,3 -n 6 --precision f32 2>/dev/null)
  for layout in "${LAYOUTS[@]}"; do
    # shellcheck disable=SC2086
    "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.detx" --deterministic $layout 2>/dev/null
    if cmp -s "$d.det1" "$d.detx"; then pass "$variant $layout --deterministic: bitwise"; else fail "$variant $layout --deterministic differs"; fi
    # shellcheck disable=SC2086
    "$MOERUN" logits -m "$d" --tokens "$TOKENS" -o "$d.fast" --precision f32 $layout 2>/dev/null
    if msg=$(compare "$d.fast" "$d.ref" 2e-5 1.0); then pass "$variant $layout fast: $msg"; else fail "$variant $layout fast: $msg"; fi
    # shellcheck disable=SC2086
    g=$("$MOERUN" generate -m "$d" --tokens 5,17,3 -n 6 --precision f32 $layout 2>/dev/null)
    if [[ -n $g && $g == "$g_ref" ]]; then pass "$variant $layout generate: $g"; else fail "$variant $layout generate: '$g' vs '$g_ref'"; fi
  done
done
if err=$("$MOERUN" logits -m "$WORK/lite-f32-1" --tokens 5 -o "$WORK/x.st" --tp 3 2>&1 >/dev/null); then
  fail "--tp 3 with 4 heads accepted"
elif grep -qF "divide" <<<"$err"; then pass "--tp 3 refused: $err"; else fail "--tp 3: $err"; fi

# Greedy generation is reproducible and stops at -n.
g1=$("$MOERUN" generate -m "$WORK/lite-f32-1" --tokens 5,17,3 -n 8 2>/dev/null)
g2=$("$MOERUN" generate -m "$WORK/lite-f32-1" --tokens 5,17,3 -n 8 -t 1 2>/dev/null)
if [[ -n $g1 && $g1 == "$g2" && $(tr ',' '\n' <<<"$g1" | wc -l) -le 8 ]]; then pass "greedy generate: $g1"; else fail "generate: '$g1' vs '$g2'"; fi
s1=$("$MOERUN" generate -m "$WORK/lite-f32-1" --tokens 5,17,3 -n 8 --temp 0.8 --top-k 20 --top-p 0.9 --seed 7 2>/dev/null)
s2=$("$MOERUN" generate -m "$WORK/lite-f32-1" --tokens 5,17,3 -n 8 --temp 0.8 --top-k 20 --top-p 0.9 --seed 7 2>/dev/null)
if [[ -n $s1 && $s1 == "$s2" ]]; then pass "seeded sampling reproducible: $s1"; else fail "sampling: '$s1' vs '$s2'"; fi

# Text in, text out: -p goes through tokenizer.json; --print-ids shows the same ids as --tokens.
tm="$WORK/with-tokenizer"
$PY "$ROOT/tools/make_test_model.py" "$tm" --vocab 305 --tokenizer-dir "$ROOT/tests/tokenizer/testdata/synthetic" >/dev/null
ids=$("$MOERUN" tokenize -m "$tm" -p "hello world")
a=$("$MOERUN" generate -m "$tm" -p "hello world" -n 6 --print-ids 2>/dev/null)
b=$("$MOERUN" generate -m "$tm" --tokens "$ids" -n 6 --print-ids 2>/dev/null)
if [[ $ids == 300,* && -n $a && $a == "$b" ]]; then pass "generate -p == generate --tokens (tokenize: $ids)"; else fail "-p vs --tokens: ids=$ids a=$a b=$b"; fi
if "$MOERUN" generate -m "$tm" -p "hello" --chat -n 4 >/dev/null 2>&1; then pass "generate --chat runs"; else fail "generate --chat"; fi
chat_ids=$("$MOERUN" generate -m "$tm" -p "hi" --chat -n 0 --print-ids 2>&1 >/dev/null | grep -o "prompt [0-9]* tokens")
if [[ $chat_ids == "prompt "*" tokens" ]]; then pass "--chat prompt: $chat_ids"; else fail "--chat prompt: $chat_ids"; fi

# eval: batched greedy decoding over a JSONL task; the same answers, problem by problem, on every
# layout and batch size (--deterministic).
write_arith_task "$WORK/task.jsonl" 24
last=$("$MOERUN" eval -m "$tm" --task "$WORK/task.jsonl" --max-new 4 --answers "$WORK/ans1" --deterministic 2>/dev/null | tail -1)
if [[ $last =~ ^accuracy:\ [0-9.]+\ \([0-9]+/24\)$ ]]; then pass "eval prints '$last'"; else fail "eval last line: '$last'"; fi
for layout in "--tp 2" "--dp 2 --batch 5" "--tp 2 --dp 2 --ep --sp" "--dp 2 --ep --dispatch alltoall"; do
  # shellcheck disable=SC2086
  "$MOERUN" eval -m "$tm" --task "$WORK/task.jsonl" --max-new 4 --answers "$WORK/ans2" --deterministic $layout >/dev/null 2>&1
  if cmp -s "$WORK/ans1" "$WORK/ans2"; then pass "eval $layout: same answers"; else fail "eval $layout: answers differ"; fi
done

# Bad input: one clear error, exit != 0.
expect_error() {
  local name=$1 needle=$2
  shift 3
  local err
  err=$("$@" 2>&1 >/dev/null)
  local rc=$?
  if [[ $rc -ne 0 && $rc -lt 128 ]] && grep -qF -- "$needle" <<<"$err"; then pass "$name"; else fail "$name (rc $rc): $err"; fi
}
d="$WORK/lite-f32-3"
expect_error "token out of range" "token id 300 at position 1 is outside the vocabulary [0, 300)" -- \
  "$MOERUN" logits -m "$d" --tokens 5,300 -o "$WORK/x.st"
expect_error "prompt longer than context" "more than the context -c 2" -- \
  "$MOERUN" generate -m "$d" --tokens 5,6,7 -c 2
cp -r "$d" "$WORK/missing"; rm "$WORK/missing/model-00002-of-000003.safetensors"
expect_error "missing shard" "model-00002-of-000003.safetensors" -- "$MOERUN" logits -m "$WORK/missing" --tokens 5 -o "$WORK/x.st"
cp -r "$d" "$WORK/trunc"; f="$WORK/trunc/model-00001-of-000003.safetensors"; head -c 10000 "$f" >"$f.tmp" && mv "$f.tmp" "$f"
expect_error "truncated shard" "model-00001-of-000003.safetensors" -- "$MOERUN" logits -m "$WORK/trunc" --tokens 5 -o "$WORK/x.st"
cp -r "$WORK/lite-f32-1" "$WORK/shape"; sed -i 's/"kv_lora_rank": 32/"kv_lora_rank": 24/' "$WORK/shape/config.json"
expect_error "config contradicts weights" "has shape [32], expected [24] from config.json" -- "$MOERUN" logits -m "$WORK/shape" --tokens 5 -o "$WORK/x.st"
expect_error "not a token list" "--tokens: 'x' is not a token id" -- "$MOERUN" logits -m "$d" --tokens 5,x -o "$WORK/x.st"

# inspect: config summary, tensor table, validation result.
out=$("$MOERUN" inspect -m "$WORK/v2-bf16-3" 2>/dev/null)
if grep -q "validation: OK" <<<"$out" && grep -q "model.layers.1.mlp.experts.15.down_proj.weight | BF16 | \[64, 32\]" <<<"$out"; then
  pass "inspect"
else
  fail "inspect: $out"
fi

# --check-tensors names a tensor holding NaN.
cp -r "$WORK/lite-f32-1" "$WORK/nan"
$PY - "$WORK/nan/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
d = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
o = h["model.layers.1.post_attention_layernorm.weight"]["data_offsets"]
d[8 + n + o[0] + 12:8 + n + o[0] + 16] = struct.pack("<f", float("nan"))
open(p, "wb").write(d)
PY
expect_error "--check-tensors finds NaN" "tensor 'model.layers.1.post_attention_layernorm.weight' holds nan at flat index 3" -- \
  "$MOERUN" logits -m "$WORK/nan" --tokens 5 -o "$WORK/x.st" --check-tensors

echo "model_test: $failures failure(s)"
exit $((failures > 0))
