# Shared by npm_compare.sh and sp_npm_compare.sh: the checks and the pinned npm install of the
# transformers.js packages they compare with. Source it after setting SCRIPT (the name in
# messages); it sets NPM_DIR and defines fail and npm_require.
NPM_DIR="${MOERUN_NPM_DIR:-${HOME:-/tmp}/.cache/moerun-npm}"

fail() {
  echo "${SCRIPT}: FAILED: $*" >&2
  exit 1
}

[[ -n "${ENCODE_TOOL:-}" && -x "${ENCODE_TOOL}" ]] || fail "ENCODE_TOOL is not set to the tokenizer_encode_tool binary"
command -v node >/dev/null || fail "node not found (Debian: apt-get install nodejs npm; see scripts/install_deps.sh)"
command -v npm >/dev/null || fail "npm not found (Debian: apt-get install nodejs npm; see scripts/install_deps.sh)"

# npm_require VERSION PACKAGE...: installs PACKAGE@VERSION into NPM_DIR unless every one is there
# at that version already (then the registry is not contacted).
npm_require() {
  local version=$1 missing=0 p
  shift
  for p in "$@"; do
    [[ "$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("") }' \
      "${NPM_DIR}/node_modules/$p/package.json")" == "$version" ]] || missing=1
  done
  [[ $missing -eq 1 ]] || return 0
  local specs=()
  for p in "$@"; do specs+=("$p@$version"); done
  mkdir -p "${NPM_DIR}"
  [[ -f "${NPM_DIR}/package.json" ]] || echo '{"private": true}' >"${NPM_DIR}/package.json"
  echo "${SCRIPT}: installing ${specs[*]} into ${NPM_DIR}" >&2
  if ! (cd "${NPM_DIR}" && npm install --no-audit --no-fund "${specs[@]}" >&2); then
    fail "could not install ${specs[*]} from the npm registry (is it reachable?); no comparison was made"
  fi
}
