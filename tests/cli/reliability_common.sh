# Shared by reliability_test.sh and reliability_mpi_test.sh: tests/model/common.sh (MOERUN, ROOT,
# PY, a WORK dir removed on exit, pass/fail counters), ST (st_tool.py) and `finish NAME` (the
# summary and exit code). Source it after `set -uo pipefail`, with HERE set to tests/cli.
# shellcheck source=tests/model/common.sh
source "$HERE/../model/common.sh"
ST="$PY $HERE/st_tool.py"
finish() {
  if [[ $failures -ne 0 ]]; then
    echo "$1: $failures failure(s)"
    exit 1
  fi
  echo "$1: all passed"
}
