#!/usr/bin/env bash
# Issue 12 §1–§2 on in-process ranks: a rank started differently stops every rank at once with the
# field and both values (--fault-disagree-rank stands in for a differently started rank; real
# processes with really different flags are in reliability_mpi_test.sh); NaN/Inf never pass: a NaN
# weight stops generate at the layer it reaches (every layout, fast and deterministic), config
# values out of range are refused naming field and bound, moe-layer --check FAILs on NaN output and
# on an input that saturates the router, and --check-tensors names the tensor in moe-layer too.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cli/reliability_common.sh
source "$HERE/reliability_common.sh"

# expect NAME RC_WANT NEEDLE SECONDS -- CMD...: CMD exits RC_WANT (a clean error, no signal) within
# SECONDS and its stdout + stderr hold NEEDLE.
expect() {
  local name=$1 want=$2 needle=$3 limit=$4
  shift 5
  local t0=$SECONDS out rc
  out=$(timeout 300 "$@" 2>&1 </dev/null)
  rc=$?
  local took=$((SECONDS - t0))
  if [[ $rc -eq $want && $took -le $limit ]] && grep -qF -- "$needle" <<<"$out"; then
    pass "$name (rc $rc, ${took} s)"
  else
    fail "$name: rc $rc (want $want), ${took} s (limit $limit): $(tail -n 5 <<<"$out")"
  fi
}

model="$ROOT/models/tiny-arith"
disagree="ranks disagree on 'fault injection': rank 0 has no such field, rank 1 has '--fault-disagree-rank'"

echo "== §1: a rank started differently stops every rank with the field and both values"
expect "generate --tp 2, rank 1 differs" 1 "$disagree" 10 -- \
  "$MOERUN" generate -m "$model" --tokens 1,2,3 -n 4 --tp 2 -t 2 --fault-disagree-rank 1
expect "eval --dp 2, rank 1 differs" 1 "$disagree" 10 -- \
  "$MOERUN" eval -m "$model" --task "$model/heldout.jsonl" --dp 2 -t 2 --fault-disagree-rank 1
ex="$WORK/ex"
"$MOERUN" make-example --out "$ex" --preset v2-lite --small --tokens 8 --dtype f32 2>/dev/null
io=(--config "$ex/config.json" --weights "$ex/layer.safetensors" --input "$ex/x.safetensors" -o "$WORK/y.st")
expect "moe-layer --tp 2 --ep, rank 1 differs" 1 "$disagree" 10 -- \
  "$MOERUN" moe-layer "${io[@]}" --tp 2 --ep -t 2 --fault-disagree-rank 1
expect "agreeing ranks still run" 0 "check: PASS" 60 -- "$MOERUN" moe-layer "${io[@]}" --tp 2 --ep -t 2 --check

echo "== §2: a NaN weight stops generate at its layer, on every layout and in both modes"
nan_model="$WORK/nan"
cp -r "$model" "$nan_model"
$ST poison "$nan_model/model.safetensors" model.layers.2.self_attn.o_proj.weight 0 nan
for layout in "" "--deterministic" "--tp 2" "--tp 2 --deterministic" "--dp 2" "--tp 2 --dp 2 --ep --sp" \
  "--tp 2 --dp 2 --ep --deterministic"; do
  # shellcheck disable=SC2086
  expect "NaN o_proj weight, layout '${layout}'" 1 "layer 2 output: nan at position 0" 30 -- \
    "$MOERUN" generate -m "$nan_model" --tokens 1,2,3 -n 4 -t 4 $layout
done
# NaN in every routed expert of layer 1: the MoE sums (fixed point in --deterministic) carry it.
moe_nan="$WORK/moe_nan"
cp -r "$model" "$moe_nan"
for e in $($ST names "$moe_nan/model.safetensors" | awk '/layers\.1\.mlp\.experts\.[0-9]+\.down_proj/ {print $1}'); do
  $ST poison "$moe_nan/model.safetensors" "$e" 0 nan
done
for layout in "" "--deterministic" "--tp 2 --dp 2 --ep --sp --deterministic" "--dp 2 --ep --dispatch alltoall"; do
  # shellcheck disable=SC2086
  expect "NaN experts of layer 1, layout '${layout}'" 1 "layer 1 output: nan at position 0" 30 -- \
    "$MOERUN" generate -m "$moe_nan" --tokens 1,2,3 -n 4 -t 4 $layout
done
expect "--check-tensors names the tensor" 1 "tensor 'model.layers.2.self_attn.o_proj.weight' holds nan at flat index 0" \
  30 -- "$MOERUN" generate -m "$nan_model" --tokens 1,2,3 -n 4 --check-tensors
expect "quantize --check-tensors names the tensor" 1 \
  "tensor 'model.layers.2.self_attn.o_proj.weight' holds nan at flat index 0" 30 -- \
  "$MOERUN" quantize -m "$nan_model" -o "$WORK/nan.gguf" --type q8_0 --check-tensors
# An Inf in one embedding row: decoding one token per step, the position of that token is named.
# (In one prefill chunk the masked scores of later positions still multiply their value rows, and
# 0 x NaN is NaN, so an earlier position of the chunk would be named.)
inf_model="$WORK/inf"
cp -r "$model" "$inf_model"
$ST poison "$inf_model/model.safetensors" model.embed_tokens.weight $((7 * 128 + 3)) inf
expect "Inf embedding of token 7" 1 "layer 0 output: nan at position 2 (batch row 0" 30 -- \
  "$MOERUN" logits -m "$inf_model" --tokens 1,2,7,3 -o "$WORK/l.st" --decode
expect "Inf embedding of token 7, --deterministic --tp 2" 1 "layer 0 output: nan at position 2 (batch row 0" 30 -- \
  "$MOERUN" logits -m "$inf_model" --tokens 1,2,7,3 -o "$WORK/l.st" --decode --deterministic --tp 2 -t 2

echo "== §2: config values out of range are refused naming the field and the bound"
bad_config() {
  local name=$1 needle=$2 edit=$3
  cp -r "$model" "$WORK/badcfg"
  $PY - "$WORK/badcfg/config.json" "$edit" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))
PY
  expect "$name" 1 "$needle" 30 -- "$MOERUN" generate -m "$WORK/badcfg" --tokens 1,2 -n 2
  rm -rf "$WORK/badcfg"
}
bad_config "negative rms_norm_eps" "field 'rms_norm_eps' = -1e-06 must be > 0" 'c["rms_norm_eps"] = -1e-6'
bad_config "rope_theta 0" "field 'rope_theta' = 0 must be > 0" 'c["rope_theta"] = 0'
bad_config "rms_norm_eps as a string" "field 'rms_norm_eps' must be a number" 'c["rms_norm_eps"] = "1e-6"'

echo "== §2: moe-layer --check never passes NaN/Inf or a check that compared nothing"
nan_ex="$WORK/nan_ex"
cp -r "$ex" "$nan_ex"
expert=$($ST names "$nan_ex/layer.safetensors" | awk '/experts\.[0-9]+\.down_proj/ {print $1; exit}')
for e in $($ST names "$nan_ex/layer.safetensors" | awk '/experts\.[0-9]+\.down_proj/ {print $1}'); do
  $ST poison "$nan_ex/layer.safetensors" "$e" 0 nan
done
nio=(--config "$nan_ex/config.json" --weights "$nan_ex/layer.safetensors" --input "$nan_ex/x.safetensors" -o "$WORK/y.st")
expect "NaN expert weights: check FAILs" 1 "check: FAIL" 60 -- "$MOERUN" moe-layer "${nio[@]}" --check
expect "NaN expert weights: the reason" 1 "check failed:" 60 -- "$MOERUN" moe-layer "${nio[@]}" --check
expect "NaN expert weights, --tp 2 --ep: check FAILs" 1 "check: FAIL" 60 -- \
  "$MOERUN" moe-layer "${nio[@]}" --check --tp 2 --ep -t 2
expect "NaN expert weights without --check: the output is refused" 1 "moe-layer output: nan at token 0" 60 -- \
  "$MOERUN" moe-layer "${nio[@]}"
expect "moe-layer --check-tensors names the tensor" 1 "tensor '$expert' holds nan at flat index 0" 60 -- \
  "$MOERUN" moe-layer "${nio[@]}" --check-tensors
big="$WORK/big"
cp -r "$ex" "$big"
$ST poison "$big/x.safetensors" hidden_states all 1e30
expect "a 1e30 input: check FAILs" 1 "check: FAIL" 60 -- \
  "$MOERUN" moe-layer --config "$big/config.json" --weights "$big/layer.safetensors" --input "$big/x.safetensors" \
  -o "$WORK/y.st" --check
nan_in="$WORK/nan_in"
cp -r "$ex" "$nan_in"
$ST poison "$nan_in/x.safetensors" hidden_states 20 nan
expect "a NaN input is refused naming token and column" 1 "'hidden_states': nan at token 0, column 20" 30 -- \
  "$MOERUN" moe-layer --config "$nan_in/config.json" --weights "$nan_in/layer.safetensors" \
  --input "$nan_in/x.safetensors" -o "$WORK/y.st"

finish reliability_test
