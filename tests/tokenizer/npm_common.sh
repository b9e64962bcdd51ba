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

# npm_present VERSION PACKAGE...: true if every PACKAGE is in NPM_DIR at VERSION.
npm_present() {
  local version=$1 p
  shift
  for p in "$@"; do
    [[ "$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("") }' \
      "${NPM_DIR}/node_modules/$p/package.json")" == "$version" ]] || return 1
  done
}

# npm_require VERSION PACKAGE...: installs PACKAGE@VERSION into NPM_DIR unless every one is there
# at that version already (then the registry is not contacted). Installs hold a lock on NPM_DIR:
# tests running side by side (ctest -j) must not run npm in one folder at once.
npm_require() {
  local version=$1 p
  npm_present "$@" && return 0
  shift
  local specs=()
  for p in "$@"; do specs+=("$p@$version"); done
  mkdir -p "${NPM_DIR}"
  exec 8>"${NPM_DIR}/.install.lock"
  flock 8
  if ! npm_present "${version}" "$@"; then  # not installed meanwhile by the test that held the lock
    [[ -f "${NPM_DIR}/package.json" ]] || echo '{"private": true}' >"${NPM_DIR}/package.json"
    echo "${SCRIPT}: installing ${specs[*]} into ${NPM_DIR}" >&2
    if ! (cd "${NPM_DIR}" && npm install --no-audit --no-fund "${specs[@]}" >&2); then
      fail "could not install ${specs[*]} from the npm registry (is it reachable?); no comparison was made"
    fi
  fi
  exec 8>&-
}

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

# Ill-formed UTF-8 into FILE, one case per line: a stray byte, a truncated character, an overlong
# form, a surrogate, a code point above U+10FFFF, bare continuation bytes, FE/FF, a truncated emoji.
write_invalid_utf8() {
  printf 'abc\xffdef\n\xe4\xbd\n\xc0\x80 overlong\n\xed\xa0\x80 surrogate\n\xf4\x90\x80\x80 too big\n' >"$1"
  printf 'mixed \xe4\xbd\xa0\xe5\xa5 text\n\x80\x80\x80 continuation\n\xfe\xff bytes\n\xf0\x9f\x98 emoji cut\n' >>"$1"
  printf 'tail \xe4\xbd' >>"$1"
}

total_lines=0
total_tokens=0
mismatches=0
# compare_with_js TOKENIZER_DIR LABEL INPUT [--decode]: moerun's and transformers.js's ids (and
# decoded text with --decode) of every line of INPUT and of the whole file must be identical;
# counts lines, tokens and mismatches (the first 10 printed).
compare_with_js() {
  local dir="$1" label="$2" input="$3" flag="${4:-}"
  local name out
  name="$(basename "${input}")"
  out="${WORK}/${label}.${name}"
  # shellcheck disable=SC2086
  if ! "${ENCODE_TOOL}" "${dir}" "${input}" ${flag} >"${out}.cpp"; then
    fail "tokenizer_encode_tool failed on ${label} ${name} (see above)"
  fi
  # shellcheck disable=SC2086
  node "${HERE}/encode_reference.mjs" "${NPM_DIR}" "${dir}/tokenizer.json" "${dir}/tokenizer_config.json" \
    "${input}" ${flag} >"${out}.js" || fail "encode_reference.mjs failed on ${label} ${name}"
  mapfile -t cpp <"${out}.cpp"
  mapfile -t js <"${out}.js"
  [[ ${#cpp[@]} -eq ${#js[@]} ]] || fail "${label} ${name}: ${#cpp[@]} lines from C++ but ${#js[@]} from JS"
  for i in "${!cpp[@]}"; do
    if [[ "${cpp[$i]}" != "${js[$i]}" ]]; then
      mismatches=$((mismatches + 1))
      if ((mismatches <= 10)); then
        local where="line $((i + 1))"
        ((i + 1 == ${#cpp[@]})) && where="whole file"
        echo "${SCRIPT}: MISMATCH ${label} ${name} ${where}" >&2
        echo "  text: $(sed -n "$((i + 1))p" "${input}" | head -c 300)" >&2
        echo "  c++:  ${cpp[$i]:0:600}" >&2
        echo "  js:   ${js[$i]:0:600}" >&2
      fi
    fi
    local ids="${cpp[$i]%%$'\t'*}"  # with --decode the decoded text follows a tab
    if [[ -n "${ids}" ]]; then
      total_tokens=$((total_tokens + $(tr -cd ',' <<<"${ids}" | wc -c) + 1))
    fi
  done
  total_lines=$((total_lines + ${#cpp[@]}))
}
