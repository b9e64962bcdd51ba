#!/usr/bin/env bash
# `moerun serve` under real mpirun processes: world rank 0 serves HTTP and drives the others
# through the engine's step protocol. The openai client test (deterministic: batched logprobs
# bitwise equal to alone) passes on -np 2 --tp 2 and -np 4 --tp 2 --dp 2 --ep --sp; SIGTERM to
# mpirun drains and every rank exits 0. Needs MOERUN and Open MPI.
set -euo pipefail
SERVE_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$SERVE_HERE/common.sh"
[[ -x "${MOERUN:-}" ]] || serve_fail "MOERUN is not set to the moerun binary"
command -v mpirun >/dev/null || serve_fail "mpirun not found (scripts/install_deps.sh installs openmpi-bin)"
serve_npm_install
WORK=$(mktemp -d)
trap 'kill -KILL ${SERVE_PID:-0} 2>/dev/null || true; rm -rf "$WORK"' EXIT
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none --mca btl self,vader)

for layout in "2|--tp 2" "4|--tp 2 --dp 2 --ep --sp"; do
  IFS='|' read -r np flags <<<"$layout"
  echo "== mpirun -np $np moerun serve $flags --deterministic"
  # shellcheck disable=SC2086
  serve_start "$WORK/mpi.log" "${MPIRUN[@]}" -np "$np" -- -t 1 $flags --deterministic
  serve_node openai_client_test.mjs "$SERVE_URL" --deterministic --parallel
  serve_stop
done
echo "serve_mpi_test: all passed"
