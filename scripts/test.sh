#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. g++ Release build with -Werror; every ctest (unit, cli) runs.
#   2. clang-14 build with AddressSanitizer + UndefinedBehaviorSanitizer; the unit tests run again.
#   3. clang-14 build with ThreadSanitizer (only the targets label `tsan` needs); the tests of threads
#      and in-process ranks run again (thread pool, collectives, parallel MoE on every layout, engine,
#      server; tests/cli/inproc_test.sh, reliability and serve end to end; no MPI). Any report fails
#      the stage; tests/tsan.supp holds only uninstrumented third-party code, each entry explained.
#   4. The safetensors and GGUF libFuzzer targets run for a bounded time each (MOERUN_FUZZ_SECONDS, default 30),
#      then the index.json, config.json, tokenizer.json and request-body targets from their committed seed
#      corpora (tests/fuzz/corpus/) for MOERUN_FUZZ_PARSER_SECONDS each (default 15).
#   5. clang-format check of every C++ source.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
JOBS=$(nproc)

echo "== g++ -Werror build and tests"
cmake -S . -B build-ci -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOERUN_WERROR=ON >/dev/null
cmake --build build-ci -j "$JOBS"
ctest --test-dir build-ci -j "$JOBS" --output-on-failure --timeout 900

echo "== clang-14 ASan/UBSan build and unit tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DMOERUN_WERROR=ON -DMOERUN_SANITIZE=address,undefined -DMOERUN_BUILD_BENCHMARKS=OFF \
  -DMOERUN_BUILD_FUZZERS=ON >/dev/null
cmake --build build-asan -j "$JOBS"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  ctest --test-dir build-asan -j "$JOBS" -L unit --output-on-failure --timeout 900

echo "== clang-14 ThreadSanitizer build and in-process-rank tests"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DMOERUN_WERROR=ON -DMOERUN_SANITIZE=thread -DMOERUN_BUILD_BENCHMARKS=OFF -DMOERUN_BUILD_FUZZERS=OFF >/dev/null
cmake --build build-tsan -j "$JOBS" --target moerun core_test parallel_test engine_test serve_test
# Reports go to files (a test expecting a non-zero exit would hide exit code 66): any file fails.
tsan_logs=$(mktemp -d)
tsan_rc=0
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4:exitcode=66:log_path=$tsan_logs/tsan:suppressions=$PWD/tests/tsan.supp" \
  ctest --test-dir build-tsan -j "$JOBS" -L tsan --output-on-failure --timeout 900 || tsan_rc=$?
if compgen -G "$tsan_logs/tsan.*" >/dev/null; then
  cat "$tsan_logs"/tsan.*
  echo "ThreadSanitizer: $(ls "$tsan_logs" | wc -l) report(s)"
  exit 1
fi
rm -rf "$tsan_logs"
[[ $tsan_rc -eq 0 ]] || exit "$tsan_rc"

echo "== fuzz safetensors for ${MOERUN_FUZZ_SECONDS:-30} s"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
build-ci/bin/moerun make-example --out "$corpus/seed" --preset v3 --small --tokens 2 --dtype f32 2>/dev/null
cp "$corpus/seed/x.safetensors" "$corpus/x.safetensors"
build-asan/bin/safetensors_fuzz -max_total_time="${MOERUN_FUZZ_SECONDS:-30}" -max_len=4096 -print_final_stats=0 \
  "$corpus" 2>&1 | tail -n 3

echo "== fuzz gguf for ${MOERUN_FUZZ_SECONDS:-30} s"
gcorpus=$(mktemp -d)
trap 'rm -rf "$corpus" "$gcorpus"' EXIT
# Seed: a small valid GGUF v3 (a u32, a string array, an F32 [2, 4] and a Q8_0 [1, 32] tensor).
/usr/bin/python3 - "$gcorpus/seed.gguf" <<'PY'
import struct, sys
def s(x): return struct.pack("<Q", len(x)) + x
kv = s(b"general.alignment") + struct.pack("<II", 4, 32)
kv += s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s(b"a") + s(b"\xc4\xa0b")
ti = s(b"w") + struct.pack("<IQQIQ", 2, 4, 2, 0, 0) + s(b"q") + struct.pack("<IQIQ", 1, 32, 8, 32)
b = b"GGUF" + struct.pack("<IQQ", 3, 2, 2) + kv + ti
b += b"\0" * (-len(b) % 32) + struct.pack("<8f", *range(8)) + b"\x3c" * 34
open(sys.argv[1], "wb").write(b)
PY
build-asan/bin/gguf_fuzz -max_total_time="${MOERUN_FUZZ_SECONDS:-30}" -max_len=4096 -print_final_stats=0 \
  "$gcorpus" 2>&1 | tail -n 3

# The remaining parsers, each from its committed seeds; new inputs go to a scratch directory (the
# first corpus argument), so the committed corpus is only read.
pcorpus=$(mktemp -d)
trap 'rm -rf "$corpus" "$gcorpus" "$pcorpus"' EXIT
for target in index:4096 config:4096 tokenizer:8192 openai_request:4096; do
  name=${target%%:*}
  echo "== fuzz $name for ${MOERUN_FUZZ_PARSER_SECONDS:-15} s"
  mkdir -p "$pcorpus/$name"
  build-asan/bin/"${name}_fuzz" -max_total_time="${MOERUN_FUZZ_PARSER_SECONDS:-15}" -max_len="${target#*:}" \
    -print_final_stats=0 "$pcorpus/$name" "tests/fuzz/corpus/$name" 2>&1 | tail -n 3
done

echo "== clang-format"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror

echo "== all tests passed"
