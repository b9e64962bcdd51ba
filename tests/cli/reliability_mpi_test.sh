#!/usr/bin/env bash
# Issue 12 §1 under real mpirun processes started with really different flags, files and inputs
# (MPMD: "mpirun -np 1 moerun A : -np 1 moerun B"): every rank exits non-zero within seconds, each
# printing the same message naming the field and both values; nothing crashes, hangs or exits 0.
# And §2 under mpirun: a NaN weight stops the job naming the layer.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cli/reliability_common.sh
source "$HERE/reliability_common.sh"
MPIRUN=(timeout 120 mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none
  --mca btl self,vader)

# disagree NAME NEEDLE "ARGS OF RANK 0" "ARGS OF RANK 1": both ranks exit non-zero within 30 s and
# both print NEEDLE (the job's exit code is non-zero, not a timeout, not a signal).
disagree() {
  local name=$1 needle=$2 a=$3 b=$4
  local t0=$SECONDS out rc
  # shellcheck disable=SC2086
  out=$("${MPIRUN[@]}" -np 1 "$MOERUN" $a : -np 1 "$MOERUN" $b 2>&1 </dev/null)
  rc=$?
  local took=$((SECONDS - t0)) copies
  copies=$(grep -cF -- "moerun: error: $needle" <<<"$out")
  if [[ $rc -ne 0 && $rc -ne 124 && $rc -lt 128 && $took -le 30 && $copies -eq 2 ]] &&
    ! grep -qiE "segmentation|signal|core dumped" <<<"$out"; then
    pass "$name (rc $rc, ${took} s, the message on both ranks)"
  else
    fail "$name: rc $rc, ${took} s, $copies copies of the message: $(tail -n 8 <<<"$out")"
  fi
}

model="$ROOT/models/tiny-arith"
tail_msg="(1 of 2 ranks differ from rank 0; every rank must be started with the same flags, model files and inputs)"

echo "== generate / logits / eval with different flags, files and inputs on the two ranks"
disagree "-n differs" "ranks disagree on '-n': rank 0 has '4', rank 1 has '5' $tail_msg" \
  "generate -m $model --tokens 1,2,3 -n 4 --tp 2 -t 1" "generate -m $model --tokens 1,2,3 -n 5 --tp 2 -t 1"
disagree "--tokens differ" "ranks disagree on '--tokens': rank 0 has '3 ids: 1,2,3', rank 1 has '4 ids: 1,2,3,4'" \
  "logits -m $model --tokens 1,2,3 -o $WORK/l0.st --tp 2 -t 1" "logits -m $model --tokens 1,2,3,4 -o $WORK/l1.st --tp 2 -t 1"
disagree "--ep on one rank only" "ranks disagree on '--ep': rank 0 has 'off', rank 1 has 'on'" \
  "generate -m $model --tokens 1,2 -n 2 --tp 2 -t 1" "generate -m $model --tokens 1,2 -n 2 --tp 2 --ep -t 1"
disagree "--shared-replicated on one rank only" "ranks disagree on '--shared-replicated': rank 0 has 'off', rank 1 has 'on'" \
  "generate -m $model --tokens 1,2 -n 2 --tp 2 -t 1" "generate -m $model --tokens 1,2 -n 2 --tp 2 --shared-replicated -t 1"
disagree "--tp vs --dp" "ranks disagree on '--tp': rank 0 has '2', rank 1 has '1'" \
  "generate -m $model --tokens 1,2 -n 2 --tp 2 -t 1" "generate -m $model --tokens 1,2 -n 2 --dp 2 -t 1"
disagree "--seed differs" "ranks disagree on '--seed': rank 0 has '1', rank 1 has '2'" \
  "generate -m $model --tokens 1,2 -n 2 --dp 2 --temp 0.7 --seed 1 -t 1" \
  "generate -m $model --tokens 1,2 -n 2 --dp 2 --temp 0.7 --seed 2 -t 1"

# A different -m: the same files but one layer fewer in config.json (found before any weight is read).
other="$WORK/three_layers"
cp -r "$model" "$other"
$PY - "$other/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["num_hidden_layers"] = 3; json.dump(c, open(p, "w"))
PY
disagree "-m with a different layer count" "ranks disagree on 'model file config.json': rank 0 has 'size " \
  "generate -m $model --tokens 1,2 -n 2 --tp 2 -t 1" "generate -m $other --tokens 1,2 -n 2 --tp 2 -t 1"
# A different checkpoint of the same config (the weights differ, the headers too: one tensor fewer).
cp -r "$model" "$WORK/dropped"
$ST drop "$model/model.safetensors" model.layers.3.mlp.gate.weight "$WORK/dropped/model.safetensors"
disagree "-m with different safetensors" "ranks disagree on 'model file model.safetensors': rank 0 has 'size " \
  "generate -m $model --tokens 1,2 -n 2 --tp 2 -t 1" "generate -m $WORK/dropped --tokens 1,2 -n 2 --tp 2 -t 1"

# Two GGUF files of the same model in different block types.
$PY "$ROOT/tools/make_test_model.py" "$WORK/v2" --variant v2 --dtype f32 >/dev/null
$PY "$ROOT/tests/tokenizer/testdata/place_synthetic_tokenizer.py" "$WORK/v2"  # quantize needs one
"$MOERUN" quantize -m "$WORK/v2" -o "$WORK/a.gguf" --type q8_0 >/dev/null 2>&1
"$MOERUN" quantize -m "$WORK/v2" -o "$WORK/b.gguf" --type f16 >/dev/null 2>&1
disagree "-m with different GGUF files" "ranks disagree on 'model file': rank 0 has 'size " \
  "generate -m $WORK/a.gguf --tokens 1,2 -n 2 --tp 2 -t 1" "generate -m $WORK/b.gguf --tokens 1,2 -n 2 --tp 2 -t 1"

# eval --dp 2 with different task files (used to crash rank 0 or print a wrong accuracy).
head -n 5 "$model/heldout.jsonl" >"$WORK/task_a.jsonl"
head -n 9 "$model/heldout.jsonl" >"$WORK/task_b.jsonl"
disagree "eval --task differs" "ranks disagree on '--task': rank 0 has 'size " \
  "eval -m $model --task $WORK/task_a.jsonl --dp 2 -t 1" "eval -m $model --task $WORK/task_b.jsonl --dp 2 -t 1"

echo "== moe-layer with different inputs (token counts) and layouts"
ex="$WORK/ex"
"$MOERUN" make-example --out "$ex" --preset v2-lite --small --tokens 8 --dtype f32 2>/dev/null
$ST input "$WORK/x9.safetensors" 9 "$($ST names "$ex/x.safetensors" | awk '{gsub(/[\[\],]/," "); print $4}')"
io="--config $ex/config.json --weights $ex/layer.safetensors -o $WORK/y.st -t 1"
disagree "moe-layer --input differs (8 vs 9 tokens)" "ranks disagree on '--input': rank 0 has 'size " \
  "moe-layer $io --input $ex/x.safetensors --tp 2" "moe-layer $io --input $WORK/x9.safetensors --tp 2"
disagree "moe-layer --ep on one rank only" "ranks disagree on '--ep': rank 0 has 'off', rank 1 has 'on'" \
  "moe-layer $io --input $ex/x.safetensors --tp 2" "moe-layer $io --input $ex/x.safetensors --tp 2 --ep"

echo "== agreeing ranks still run (MPMD with the same arguments)"
args="generate -m $model --tokens 1,2,3 -n 3 --tp 2 -t 1 --print-ids"
# shellcheck disable=SC2086
if out=$("${MPIRUN[@]}" -np 1 "$MOERUN" $args : -np 1 "$MOERUN" $args 2>&1 </dev/null); then
  pass "the same arguments on both ranks run"
else
  fail "the same arguments on both ranks: $(tail -n 5 <<<"$out")"
fi

echo "== a NaN weight under mpirun stops the job naming the layer"
nan_model="$WORK/nan"
cp -r "$model" "$nan_model"
$ST poison "$nan_model/model.safetensors" model.layers.2.self_attn.o_proj.weight 0 nan
for layout in "2|--tp 2" "2|--dp 2 --ep" "2|--tp 2 --deterministic"; do
  IFS='|' read -r np flags <<<"$layout"
  t0=$SECONDS
  # shellcheck disable=SC2086
  out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" generate -m "$nan_model" --tokens 1,2,3 -n 4 -t 1 $flags 2>&1 </dev/null)
  rc=$?
  if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -qF "layer 2 output: nan at position 0" <<<"$out"; then
    pass "NaN weight under mpirun $flags (rc $rc, $((SECONDS - t0)) s)"
  else
    fail "NaN weight under mpirun $flags: rc $rc: $(tail -n 5 <<<"$out")"
  fi
done

finish reliability_mpi_test
