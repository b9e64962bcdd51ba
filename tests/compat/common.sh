# Shared by the llama.cpp comparison scripts (llama_cpp_compat_test.sh,
# llama_cpp_block_types_test.sh): the work dir, PASS/FAIL counting, the node-llama-cpp peer, the
# fixed prompts, and the greedy comparison of moerun with llama.cpp on one GGUF file.
# Source it from the script's directory (HERE set); needs MOERUN.
MOERUN=${MOERUN:?set MOERUN to the moerun binary}
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

PEER=$("$ROOT/scripts/install_llama_cpp_peer.sh" | tail -1) || { echo "FAIL: cannot install node-llama-cpp"; exit 1; }
NODE="$PEER/bin/node"
PROMPTS=("250,3,17,42" "5,9,200,7,1" "100,101,102")

# llama_greedy FILE LABEL: llama.cpp's 8 greedy tokens for every prompt into THEIRS (one JSON line
# per prompt); on rejection a FAIL naming LABEL and status 1.
llama_greedy() {
  local file=$1 label=$2 args=() p
  for p in "${PROMPTS[@]}"; do args+=(--tokens "$p"); done
  if ! THEIRS=$("$NODE" "$HERE/llama_greedy.mjs" "$file" "${args[@]}" -n 8 --threads 2 --kv-type f32 2>"$WORK/err"); then
    fail "$label: llama.cpp rejected the file: $(tail -2 "$WORK/err")"
    return 1
  fi
}

# check_prompts FILE LABEL N_CHECK [moerun generate args...]: for every prompt, moerun's greedy
# tokens equal THEIRS in the first N_CHECK of 8 (moerun's stderr in $WORK/moerun.err).
check_prompts() {
  local file=$1 label=$2 check=$3 p all want_all
  shift 3
  for p in "${PROMPTS[@]}"; do
    all=$("$MOERUN" generate -m "$file" --tokens "$p" -n 8 --print-ids --ignore-eos --precision f32 -t 2 "$@" \
      2>"$WORK/moerun.err" | head -1)
    want_all=$(grep -F "\"prompt\":[$p]" <<<"$THEIRS" | sed 's/.*"tokens":\[\([0-9,]*\)\].*/\1/')
    local mine want
    mine=$(cut -d, -f1-"$check" <<<"$all")
    want=$(cut -d, -f1-"$check" <<<"$want_all")
    if [[ -n $mine && $mine == "$want" ]]; then
      pass "$label [$p], first $check tokens: $mine (all 8: moerun $all, llama.cpp $want_all)"
    else
      fail "$label [$p], first $check tokens: moerun '$all' vs llama.cpp '$want_all'"
    fi
  done
}

# check_logits FILE LABEL TOL [moerun logits args...]: for every prompt, the logits of the first
# generated position: moerun's value for each of llama.cpp's top 5 tokens within TOL of llama.cpp's,
# and the same argmax whenever llama.cpp's top-1 lead exceeds 2 TOL (a closer call can go either
# way between two engines that each round correctly: the tiny random models have near ties).
check_logits() {
  local file=$1 label=$2 tol=$3 p theirs msg
  shift 3
  for p in "${PROMPTS[@]}"; do
    if ! theirs=$("$NODE" "$HERE/llama_greedy.mjs" "$file" --tokens "$p" -n 1 --threads 2 --kv-type f32 --logits \
      2>"$WORK/err"); then
      fail "$label [$p]: llama.cpp rejected the file: $(tail -2 "$WORK/err")"
      continue
    fi
    if ! "$MOERUN" logits -m "$file" --tokens "$p" -o "$WORK/logits.safetensors" --precision f32 -t 2 "$@" \
      2>"$WORK/moerun.err"; then
      fail "$label [$p]: moerun logits: $(tail -2 "$WORK/moerun.err")"
      continue
    fi
    if msg=$($PY "$HERE/compare_top_logits.py" "$WORK/logits.safetensors" "$theirs" "$tol"); then
      pass "$label [$p] logits: $msg"
    else
      fail "$label [$p] logits: $msg"
    fi
  done
}

# compare FILE LABEL [N_CHECK]: both of the above (N_CHECK default 8).
compare() { llama_greedy "$1" "$2" && check_prompts "$1" "$2" "${3:-8}"; }
