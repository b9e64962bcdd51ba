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
# bounds are measured quantisation error x ~2 (lite: f16 7e-4, q8_0 2.6e-2, q5_0 0.135, q4_0 0.31
# of the logit scale). The model is 64 wide, so q6_k falls back to q8_0, q4_k to q5_0 and q5_k to
# q5_1 (as llama.cpp: 256-element super-blocks).
d="$WORK/lite-f32-1"
for spec in "f16|2e-3|1.0" "q8_0|0.06|0.9" "q6_k|0.06|0.9" "q4_0|0.6|0.5" "q5_0|0.3|0.8" "q5_1|0.3|0.8" "q4_k|0.3|0.8" \
  "q5_k|0.3|0.8"; do
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
# FP8 weights as DeepSeek-V3 releases them (make_test_model.py --fp8, docs/models.md §2.3): F8_E4M3
# layer weights with a scale_inv per 128 x 128 block (H and I 192 = 128 + 64, dense 160 = 128 + 32:
# partial blocks; TP slices crossing block edges), dequantised at load. The reference dequantises
# with the same f32 multiply, so with f32 packing and activations only f32 rounding separates the
# two; q8_0 re-quantises the dequantised rows; --deterministic logits are bitwise equal across
# layouts.
f8="$WORK/v3-fp8"
$PY "$ROOT/tools/make_test_model.py" "$f8" --variant v3 --dtype bf16 --fp8 --shards 3 >/dev/null
$PY "$HERE/ref_deepseek.py" "$f8" --tokens "$TOKENS" --output "$f8.ref" >/dev/null 2>&1
for layout in "" "--tp 2" "--tp 2 --ep"; do
  # shellcheck disable=SC2086
  "$MOERUN" logits -m "$f8" --tokens "$TOKENS" -o "$f8.exact" --weight-format f32 --precision f32 $layout 2>/dev/null
  if msg=$(compare "$f8.exact" "$f8.ref" 1e-4 1.0); then pass "v3 fp8 f32 ${layout:-1 rank}: $msg"; else fail "v3 fp8 f32 ${layout:-1 rank}: $msg"; fi
done
"$MOERUN" logits -m "$f8" --tokens "$TOKENS" -o "$f8.auto" 2>/dev/null
if msg=$(compare "$f8.auto" "$f8.ref" 0.35 0.85); then pass "v3 fp8 auto (bf16): $msg"; else fail "v3 fp8 auto (bf16): $msg"; fi
# q8_0: ~0.03 of the logit scale on 23 tokens; token 13 sits on a router near-tie (layer 2 top-k
# margin 1e-3) and picks another expert under q8_0, 0.14 of the scale.
"$MOERUN" logits -m "$f8" --tokens "$TOKENS" -o "$f8.q8" --weight-format q8_0 --precision f32 2>/dev/null
if msg=$(compare "$f8.q8" "$f8.ref" 0.2 0.9); then pass "v3 fp8 --weight-format q8_0: $msg"; else fail "v3 fp8 --weight-format q8_0: $msg"; fi
for fmt in "" "--weight-format q8_0"; do
  # shellcheck disable=SC2086
  "$MOERUN" logits -m "$f8" --tokens "$TOKENS" -o "$f8.det1" --deterministic $fmt 2>/dev/null
  for layout in "--tp 2" "--tp 2 --ep"; do
    # shellcheck disable=SC2086
    "$MOERUN" logits -m "$f8" --tokens "$TOKENS" -o "$f8.detx" --deterministic $fmt $layout 2>/dev/null
    if [[ -s $f8.det1 ]] && cmp -s "$f8.det1" "$f8.detx"; then pass "v3 fp8 ${fmt:-auto} $layout --deterministic: bitwise"; else fail "v3 fp8 ${fmt:-auto} $layout --deterministic differs"; fi
  done
done
out=$("$MOERUN" inspect -m "$f8" 2>/dev/null)
if grep -q "validation: OK" <<<"$out" && grep -q "model.layers.1.mlp.experts.15.down_proj.weight | F8_E4M3 | \[192, 192\]" <<<"$out" &&
  grep -q "model.layers.1.mlp.experts.15.down_proj.weight_scale_inv | F32 | \[2, 2\]" <<<"$out"; then
  pass "inspect fp8"
else
  fail "inspect fp8: $out"
fi
# Damaged FP8 checkpoints: a scale grid that does not tile its weight, a missing scale, a NaN code.
edit_fp8() {  # edit_fp8 DIR TENSOR shape R,C | rename NEW | nan: rewrite one shard in place
  $PY - "$@" <<'PY'
import glob, json, struct, sys
d, name, op = sys.argv[1:4]
for p in glob.glob(d + "/*.safetensors"):
    b = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    if name not in h:
        continue
    if op == "nan":
        b[8 + n + h[name]["data_offsets"][0] + 5] = 0x7F
        open(p, "wb").write(b)
        break
    if op == "shape":
        h[name]["shape"] = [int(v) for v in sys.argv[4].split(",")]
    else:
        h[sys.argv[4]] = h.pop(name)
    hj = json.dumps(h).encode(); hj += b" " * ((8 - len(hj) % 8) % 8)
    open(p, "wb").write(struct.pack("<Q", len(hj)) + hj + b[8 + n:])
    break
PY
}
s="model.layers.0.mlp.down_proj.weight_scale_inv"
cp -r "$f8" "$WORK/f8-shape"; edit_fp8 "$WORK/f8-shape" "$s" shape 1,4
cp -r "$f8" "$WORK/f8-missing"; edit_fp8 "$WORK/f8-missing" "$s" rename "model.layers.0.mlp.down_proj.scales"
cp -r "$f8" "$WORK/f8-nan"; edit_fp8 "$WORK/f8-nan" "model.layers.1.mlp.experts.3.up_proj.weight" nan
$PY - "$WORK/f8-missing/model.safetensors.index.json" "$s" <<'PY'
import json, sys
p, s = sys.argv[1:3]; j = json.load(open(p)); wm = j["weight_map"]
wm["model.layers.0.mlp.down_proj.scales"] = wm.pop(s)
json.dump(j, open(p, "w"))
PY

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
expect_error "fp8 scale shape" "tensor '$s' has shape [1, 4], expected [2, 2]" -- \
  "$MOERUN" logits -m "$WORK/f8-shape" --tokens 5 -o "$WORK/x.st"
expect_error "fp8 scale missing" "FP8 tensor 'model.layers.0.mlp.down_proj.weight' has no '$s'" -- \
  "$MOERUN" logits -m "$WORK/f8-missing" --tokens 5 -o "$WORK/x.st"
expect_error "--check-tensors finds an FP8 NaN" \
  "tensor 'model.layers.1.mlp.experts.3.up_proj.weight' holds an F8_E4M3 NaN at flat index 5" -- \
  "$MOERUN" logits -m "$WORK/f8-nan" --tokens 5 -o "$WORK/x.st" --check-tensors

# inspect: config summary, tensor table, validation result.
out=$("$MOERUN" inspect -m "$WORK/v2-bf16-3" 2>/dev/null)
if grep -q "validation: OK" <<<"$out" && grep -q "model.layers.1.mlp.experts.15.down_proj.weight | BF16 | \[64, 32\]" <<<"$out"; then
  pass "inspect"
else
  fail "inspect: $out"
fi
# inspect's memory column: what each tensor takes as held with --weight-format q4_0 (18 bytes per
# 32 weights), norms and the router in f32, embeddings mapped as stored; the memory line's weights
# are the column's sum.
out=$("$MOERUN" inspect -m "$WORK/v2-bf16-3" --weight-format q4_0 2>/dev/null)
if grep -q "model.layers.1.mlp.experts.15.down_proj.weight | BF16 | \[64, 32\] | q4_0 | $((64 * 32 / 32 * 18)) |" <<<"$out" &&
  grep -q "model.layers.1.mlp.gate.weight | BF16 | \[16, 64\] | f32 | $((16 * 64 * 4)) |" <<<"$out" &&
  grep -q "model.embed_tokens.weight | BF16 | \[300, 64\] | BF16 (mapped) | $((300 * 64 * 2)) |" <<<"$out"; then
  sum=$(grep "^| model\." <<<"$out" | awk -F'|' '{s += $6} END {printf "%.2f", s / 1e9}')
  if grep -q "^memory: weights $sum GB as held; KV cache" <<<"$out"; then pass "inspect memory: $(grep '^memory' <<<"$out")"; else fail "inspect memory line (sum $sum): $(grep '^memory' <<<"$out")"; fi
else
  fail "inspect --weight-format q4_0 table: $(grep -E 'experts.15.down_proj.weight|layers.1.mlp.gate.weight|embed_tokens' <<<"$out")"
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
