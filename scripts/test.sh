#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. g++ Release build with -Werror; every ctest (unit, cli) runs.
#   2. clang-14 build with AddressSanitizer + UndefinedBehaviorSanitizer; the unit tests run again.
#   3. The safetensors libFuzzer target runs for a bounded time (MOERUN_FUZZ_SECONDS, default 30).
#   4. clang-format check of every C++ source.
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

echo "== fuzz safetensors for ${MOERUN_FUZZ_SECONDS:-30} s"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
build-ci/bin/moerun make-example --out "$corpus/seed" --preset v3 --small --tokens 2 --dtype f32 2>/dev/null
cp "$corpus/seed/x.safetensors" "$corpus/x.safetensors"
build-asan/bin/safetensors_fuzz -max_total_time="${MOERUN_FUZZ_SECONDS:-30}" -max_len=4096 -print_final_stats=0 \
  "$corpus" 2>&1 | tail -n 3

echo "== clang-format"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror

echo "== all tests passed"
