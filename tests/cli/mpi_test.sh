#!/usr/bin/env bash
# moe-layer under real `mpirun` processes (Open MPI): every layout's output is byte-identical to
# the one-rank output in --deterministic mode and passes --check in fast mode; bad layouts make
# every rank exit non-zero (no hang).
set -uo pipefail
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }
MPIRUN=(timeout 300 mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none
  --mca btl self,vader)

for preset in v2-lite qwen2; do
  d="$WORK/$preset"
  "$MOERUN" make-example --out "$d" --preset "$preset" --small --tokens 45 --dtype bf16 2>/dev/null
  io=(--config "$d/config.json" --weights "$d/layer.safetensors" --input "$d/x.safetensors")
  "$MOERUN" moe-layer "${io[@]}" --output "$d/one.safetensors" --deterministic 2>/dev/null
  while read -r np flags; do
    [[ -z $np ]] && continue
    # shellcheck disable=SC2086
    if out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" moe-layer "${io[@]}" --output "$d/det.safetensors" \
        --deterministic $flags 2>&1 </dev/null) && cmp -s "$d/det.safetensors" "$d/one.safetensors"; then
      pass "$preset -np $np $flags --deterministic: bitwise equal to one rank"
    else
      fail "$preset -np $np $flags --deterministic: $out"
    fi
    # shellcheck disable=SC2086
    if out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" moe-layer "${io[@]}" --output "$d/fast.safetensors" --check \
        --stats $flags 2>&1 </dev/null) && grep -q "check: PASS" <<<"$out"; then
      pass "$preset -np $np $flags: check passes"
    else
      fail "$preset -np $np $flags: $out"
    fi
  done <<'LAYOUTS'
2 --tp 2
2 --tp 2 --ep
2 --dp 2
2 --dp 2 --ep --dispatch alltoall
4 --tp 2 --dp 2 --ep --sp
4 --tp 2 --dp 2 --ep --sp --dispatch alltoall
4 --tp 2 --dp 2 --ep --dispatch alltoall
4 --tp 4 --shared-replicated
4 --dp 4 --ep
LAYOUTS
done

# TP under MPI, fast mode, with shared experts: exactly one all_reduce in the layer.
d="$WORK/v2-lite"
stats=$("${MPIRUN[@]}" -np 2 "$MOERUN" moe-layer --config "$d/config.json" -m "$d/layer.safetensors" \
  -i "$d/x.safetensors" -o "$d/s.safetensors" --tp 2 --stats 2>&1 | grep '"layer"')
want='{"layer": 0, "collectives": [{"op": "all_reduce", "group": "tp", "bytes": 11520, "what": "layer 0 routed+shared output", "from": "Partial(tp)", "to": "Complete(replicated over tp)"}]}'
if [[ $stats == "$want" ]]; then
  pass "mpi tp=2 stats: one all_reduce"
else
  fail "mpi tp=2 stats: $stats"
fi

# Bad layouts: every rank exits non-zero, promptly.
for bad in "3|--tp 2|world size 3 != --tp 2 x --dp 1" "2|--tp 2 --sp|--sp needs --ep"; do
  IFS='|' read -r np flags needle <<<"$bad"
  # shellcheck disable=SC2086
  out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" moe-layer --config "$d/config.json" -m "$d/layer.safetensors" \
    -i "$d/x.safetensors" -o "$d/bad.safetensors" $flags 2>&1)
  rc=$?
  if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -qF -- "$needle" <<<"$out" && [[ ! -e $d/bad.safetensors ]]; then
    pass "mpi -np $np $flags refused"
  else
    fail "mpi -np $np $flags: rc $rc: $out"
  fi
done

# A whole model under mpirun: deterministic logits bitwise equal to one in-process rank.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
m="$WORK/model"
/usr/bin/python3 "$ROOT/tools/make_test_model.py" "$m" --variant v3 --dtype bf16 --shards 2 >/dev/null
toks=5,17,3,99,42,7,8,200,1,0,33,150
"$MOERUN" logits -m "$m" --tokens $toks -o "$WORK/m1.safetensors" --deterministic 2>/dev/null
for layout in "2|--tp 2" "2|--dp 2 --ep --dispatch alltoall" "4|--tp 2 --dp 2 --ep --sp"; do
  IFS='|' read -r np flags <<<"$layout"
  # shellcheck disable=SC2086
  out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" logits -m "$m" --tokens $toks -o "$WORK/mx.safetensors" --deterministic \
    $flags 2>&1 </dev/null)
  if cmp -s "$WORK/m1.safetensors" "$WORK/mx.safetensors"; then
    pass "model under mpirun -np $np $flags: bitwise equal logits"
  else
    fail "model under mpirun -np $np $flags: $out"
  fi
done

# Quantised experts (q8_0 at load): deterministic mode cuts the 128-wide down projections into 4
# K-blocks of whole 32-column blocks on every layout; in-process ranks and mpirun agree bitwise.
q8="$WORK/model_q8"
/usr/bin/python3 "$ROOT/tools/make_test_model.py" "$q8" --variant v2 --dtype bf16 --moe-intermediate 128 >/dev/null
"$MOERUN" logits -m "$q8" --tokens $toks -o "$WORK/q8_1.safetensors" --deterministic --weight-format q8_0 2>/dev/null
for layout in "1|--tp 2" "1|--tp 4 --dp 1 --ep" "2|--tp 2" "4|--tp 2 --dp 2 --ep --sp" "4|--tp 2 --dp 2"; do
  IFS='|' read -r np flags <<<"$layout"
  run=("${MPIRUN[@]}" -np "$np")
  [[ $np == 1 ]] && run=()  # in-process ranks
  # shellcheck disable=SC2086
  out=$("${run[@]}" "$MOERUN" logits -m "$q8" --tokens $toks -o "$WORK/q8_x.safetensors" --deterministic \
    --weight-format q8_0 $flags 2>&1 </dev/null)
  if [[ -s "$WORK/q8_1.safetensors" ]] && cmp -s "$WORK/q8_1.safetensors" "$WORK/q8_x.safetensors"; then
    pass "q8_0 model (np $np) $flags --deterministic: bitwise equal logits"
  else
    fail "q8_0 model (np $np) $flags --deterministic: $out"
  fi
  rm -f "$WORK/q8_x.safetensors"
done
out=$("$MOERUN" logits -m "$q8" --tokens $toks -o "$WORK/q8_x.safetensors" --deterministic --weight-format q8_0 \
  --tp 8 2>&1)
if [[ $? -ne 0 && $out == *"divide the 4 K-blocks of the 128-wide down projections"* ]]; then
  pass "q8_0 --deterministic --tp 8 refused, naming the 4 K-blocks"
else
  fail "q8_0 --deterministic --tp 8: $out"
fi

# Qwen3-MoE (GQA: KV heads split over TP) under mpirun, the same way.
q="$WORK/qwen3"
/usr/bin/python3 "$ROOT/tools/make_test_model.py" "$q" --arch qwen3_moe --dtype bf16 --shards 2 >/dev/null
"$MOERUN" logits -m "$q" --tokens $toks -o "$WORK/q1.safetensors" --deterministic 2>/dev/null
for layout in "2|--tp 2" "2|--dp 2 --ep --dispatch alltoall" "4|--tp 2 --dp 2 --ep --sp" "4|--tp 4"; do
  IFS='|' read -r np flags <<<"$layout"
  # shellcheck disable=SC2086
  out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" logits -m "$q" --tokens $toks -o "$WORK/qx.safetensors" --deterministic \
    $flags 2>&1 </dev/null)
  if cmp -s "$WORK/q1.safetensors" "$WORK/qx.safetensors"; then
    pass "qwen3_moe under mpirun -np $np $flags: bitwise equal logits"
  else
    fail "qwen3_moe under mpirun -np $np $flags: $out"
  fi
done

# Qwen2-MoE (q/k/v biases, gated shared expert, a dense layer), Mixtral (block_sparse_moe) and
# OLMoE (q/k norm over the whole projection: an all_gather of the sums over TP) the same way.
for arch in qwen2_moe mixtral olmoe; do
  m="$WORK/$arch"
  /usr/bin/python3 "$ROOT/tools/make_test_model.py" "$m" --arch "$arch" --dtype bf16 --shards 2 >/dev/null
  "$MOERUN" logits -m "$m" --tokens $toks -o "$WORK/m1.safetensors" --deterministic 2>/dev/null
  for layout in "2|--tp 2" "4|--tp 2 --dp 2 --ep --sp --dispatch alltoall" "4|--tp 4 --ep"; do
    IFS='|' read -r np flags <<<"$layout"
    # shellcheck disable=SC2086
    out=$("${MPIRUN[@]}" -np "$np" "$MOERUN" logits -m "$m" --tokens $toks -o "$WORK/mx.safetensors" \
      --deterministic $flags 2>&1 </dev/null)
    if [[ -s "$WORK/m1.safetensors" ]] && cmp -s "$WORK/m1.safetensors" "$WORK/mx.safetensors"; then
      pass "$arch under mpirun -np $np $flags: bitwise equal logits"
    else
      fail "$arch under mpirun -np $np $flags: $out"
    fi
    rm -f "$WORK/mx.safetensors"
  done
done

echo "mpi_test: $failures failure(s)"
exit $((failures > 0))
