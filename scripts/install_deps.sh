#!/usr/bin/env bash
# Installs every build and test dependency of moerun from Debian 12 packages; with --bench also
# PyTorch (the peer baseline of bench/compare_torch.sh and the trainer tools/train_tiny.py).
# Idempotent: packages already present are skipped, so repeated runs cost one dpkg query.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  g++ clang clang-format clang-tidy libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  python3 python3-numpy
  openmpi-bin libopenmpi-dev
  iproute2  # ip netns + veth for tests/reliability/multihost_test.sh (not in minimal Debian images)
  libpcre2-dev
  libcpp-httplib-dev prometheus-cpp-dev
  chromium
  qemu-user  # qemu-x86_64: tests/cpu_level/cpu_levels_test.sh runs moerun on an emulated AVX2-only CPU
  libsimde-dev  # portable AVX-512: quant_dot_avx512_emulated_test checks the AVX-512 kernels on AVX2 CPUs
)
# node + npm run the tokenizer comparison (tests/tokenizer/npm_compare.sh). Asked for only when
# missing: a NodeSource nodejs bundles npm, and Debian's separate npm package conflicts with it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi
if [[ ${1:-} == --bench ]]; then
  PACKAGES+=(python3-torch)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "install_deps: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
