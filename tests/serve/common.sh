# Shared by the serve tests: the pinned npm clients, and starting / stopping a real `moerun serve`.
# Source it; needs MOERUN (the binary). Packages go to $MOERUN_NPM_DIR/serve (default
# ~/.cache/moerun-npm/serve); the registry is contacted only when the pinned versions are missing.
SERVE_NPM_DIR="${MOERUN_NPM_DIR:-${HOME:-/tmp}/.cache/moerun-npm}/serve"
OPENAI_VERSION="5.23.2"          # the official OpenAI client (node >= 18)
PUPPETEER_VERSION="24.10.0"      # drives the system Chromium (Debian package) headless

serve_fail() {
  echo "serve test: FAILED: $*" >&2
  exit 1
}

# Installs the pinned npm packages once; prints the node_modules parent (for NODE_PATH-less ESM).
serve_npm_install() {
  command -v node >/dev/null || serve_fail "node not found (scripts/install_deps.sh installs nodejs and npm)"
  local want_openai have_openai have_pptr
  have_openai=$(node -e 'try{console.log(require(process.argv[1]).version)}catch(e){console.log("")}' \
    "${SERVE_NPM_DIR}/node_modules/openai/package.json")
  have_pptr=$(node -e 'try{console.log(require(process.argv[1]).version)}catch(e){console.log("")}' \
    "${SERVE_NPM_DIR}/node_modules/puppeteer-core/package.json")
  if [[ "$have_openai" != "$OPENAI_VERSION" || "$have_pptr" != "$PUPPETEER_VERSION" ]]; then
    mkdir -p "$SERVE_NPM_DIR"
    [[ -f "$SERVE_NPM_DIR/package.json" ]] || echo '{"private": true}' >"$SERVE_NPM_DIR/package.json"
    PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix "$SERVE_NPM_DIR" --no-audit --no-fund --loglevel=error \
      "openai@${OPENAI_VERSION}" "puppeteer-core@${PUPPETEER_VERSION}" >&2 ||
      serve_fail "npm install openai@${OPENAI_VERSION} puppeteer-core@${PUPPETEER_VERSION} failed"
  fi
}

# Copies a test script next to node_modules (ES modules resolve packages from their own folder)
# and runs it with the remaining arguments.
serve_node() {
  local script="$1"
  shift
  cp "$SERVE_HERE/$script" "$SERVE_NPM_DIR/$script"
  node "$SERVE_NPM_DIR/$script" "$@"
}

# serve_start LOG [launcher words...] -- [moerun serve args...]: starts the server on a free port,
# waits until /health is 200 (or $SERVE_READY_CODE) or the process dies; sets SERVE_PID (the
# launched process: moerun or mpirun), SERVE_RANK0_PID (world rank 0's moerun, which serves and
# drains) and SERVE_URL.
serve_start() {
  local log="$1"
  shift
  local launcher=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    launcher+=("$1")
    shift
  done
  shift
  : >"$log"  # exists before the background process opens it (the polling below reads it)
  "${launcher[@]}" "$MOERUN" serve --port 0 "$@" >"$log" 2>&1 &
  SERVE_PID=$!
  local port=""
  for _ in $(seq 1 600); do
    port=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\) .*|\1|p' "$log" | head -1)
    [[ -n "$port" ]] && break
    kill -0 "$SERVE_PID" 2>/dev/null || serve_fail "the server exited: $(tail -5 "$log")"
    sleep 0.1
  done
  [[ -n "$port" ]] || serve_fail "the server printed no port: $(tail -5 "$log")"
  SERVE_URL="http://127.0.0.1:${port}"
  SERVE_RANK0_PID=$(sed -n 's|.*listening on http://[^ ]* (pid \([0-9]*\).*|\1|p' "$log" | head -1)
  for _ in $(seq 1 1200); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$SERVE_URL/health")" == "${SERVE_READY_CODE:-200}" ]] && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || serve_fail "the server exited while loading: $(tail -5 "$log")"
    sleep 0.1
  done
  serve_fail "the server did not become ready: $(tail -5 "$log")"
}

# serve_stop: SIGTERM to world rank 0 (drain; under mpirun the other ranks follow its shutdown
# step), then the launched process must exit 0 within 60 s.
serve_stop() {
  kill -TERM "$SERVE_RANK0_PID" 2>/dev/null || true
  local rc=0
  for _ in $(seq 1 600); do
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -KILL "$SERVE_PID" 2>/dev/null || true
    serve_fail "the server did not exit within 60 s of SIGTERM"
  fi
  wait "$SERVE_PID" || rc=$?
  [[ $rc -eq 0 ]] || serve_fail "the server exited with $rc after SIGTERM"
}
