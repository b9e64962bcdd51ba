#!/usr/bin/env bash
# Reliability §7 "across hosts": two ranks in two network namespaces on this machine, joined only by
# a veth pair on a private /24, with Open MPI restricted to TCP on that subnet (`--mca btl tcp,self`,
# no shared memory), so every byte between the ranks crosses the veth as it would cross a wire
# between two hosts.
#
# Set-up: namespaces NS0 and NS1 (names carry $$), veth V0 (10.231.7.1, in NS0) <-> V1 (10.231.7.2,
# in NS1), `lo` up in each. mpirun runs in NS0 and starts rank 0 there and rank 1 through
# `ip netns exec NS1` (MPMD). Open MPI 4.1's ranks reach mpirun's PMIx server over TCP (PMIx 4 has no
# unix-socket transport), by default on 127.0.0.1 only, which rank 1 cannot reach from its own
# namespace: PMIX_MCA_ptl_tcp_remote_connections=1 with ptl_tcp_if_include=<subnet> makes the server
# listen on the veth, so the control traffic crosses the same link (like the remote daemon's link of
# a real two-host job).
#
# Cases: (1) the veth's byte counters grow by at least the volume the job's TP all_reduces must move,
# and `logits --tp 2 --deterministic` is bitwise equal to one rank; (2) `generate` over the link
# gives one rank's greedy tokens; (3) `--dp 2 --ep` likewise; (4) the link cut (veth down) under a
# running `eval --tp 2 --collective-timeout 5`: mpirun and both ranks end non-zero within the
# deadline + 10 s, with the message naming the collective (op, group, number, layer), none left in
# either namespace; (5) the same with rank 0 stopped, so only rank 1 (whose path to mpirun is cut)
# sees the failure: its MPI_Abort cannot reach mpirun, and moerun's bounded abort still ends it.
#
# Needs root (CAP_NET_ADMIN) and `ip` (iproute2); without them it prints why and exits 77 (ctest
# SKIP_RETURN_CODE).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

SKIP=77
skip() {
  echo "SKIP: $1"
  exit $SKIP
}
[[ $(id -u) -eq 0 ]] || skip "not root: creating network namespaces needs CAP_NET_ADMIN"
command -v ip >/dev/null || skip "'ip' (iproute2) not found"
command -v mpirun >/dev/null || skip "mpirun not found"

NET=10.231.7
NS0=moerun_mh0_$$
NS1=moerun_mh1_$$
V0=mrv0_$$  # interface names: at most 15 characters
V1=mrv1_$$
JOB=""      # pid of a background job, killed on exit if still there

cleanup() {
  [[ -n $JOB ]] && kill -KILL "$JOB" 2>/dev/null
  for ns in "$NS0" "$NS1"; do
    # Processes left in a namespace (a failed case) would keep it alive: end them by pid.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! err=$(ip netns add "$NS0" 2>&1); then skip "ip netns add failed (no CAP_NET_ADMIN?): $err"; fi
if ! { ip netns add "$NS1" &&
  ip link add "$V0" netns "$NS0" type veth peer name "$V1" netns "$NS1" &&
  ip -n "$NS0" addr add "$NET.1/24" dev "$V0" &&
  ip -n "$NS1" addr add "$NET.2/24" dev "$V1" &&
  ip -n "$NS0" link set lo up && ip -n "$NS1" link set lo up &&
  ip -n "$NS0" link set "$V0" up && ip -n "$NS1" link set "$V1" up; }; then
  echo "FAIL: setting up the namespaces and the veth pair"
  exit 1
fi

# mpirun inside NS0: TCP only, on the veth's subnet only (BTL, ORTE's OOB and PMIx).
# shellcheck disable=SC2054  # the commas are inside one argument
NSMPIRUN=(ip netns exec "$NS0" env PMIX_MCA_ptl_tcp_remote_connections=1 "PMIX_MCA_ptl_tcp_if_include=$NET.0/24"
  mpirun --allow-run-as-root --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include "$NET.0/24"
  --mca oob_tcp_if_include "$NET.0/24")
veth_bytes() { # tx + rx bytes of V0, read inside NS0
  ip netns exec "$NS0" sh -c "echo \$((\$(cat /sys/class/net/$V0/statistics/tx_bytes) + \$(cat /sys/class/net/$V0/statistics/rx_bytes)))"
}
run_job() { # run_job LIMIT ARGS...: moerun ARGS as rank 0 in NS0 and rank 1 in NS1, killed after LIMIT s
  local limit=$1
  shift
  timeout -s KILL "$limit" "${NSMPIRUN[@]}" -np 1 "$MOERUN" "$@" : -np 1 ip netns exec "$NS1" "$MOERUN" "$@" </dev/null
}

# 48 prompt tokens (vocab 264); the floor on what TP must move: one f32 all_reduce of the hidden
# states per layer per token (the deterministic mode moves 128-bit sums, and more than one per layer).
TOKS=$($PY -c "print(','.join(str((i * 37 + 11) % 256) for i in range(48)))")
floor=$($PY -c "import json; c = json.load(open('$TINY/config.json')); print(48 * c['hidden_size'] * 4 * c['num_hidden_layers'])")

# 1. logits --tp 2 --deterministic over the veth: bitwise equal to one rank, and the bytes crossed.
"$MOERUN" logits -m "$TINY" --tokens "$TOKS" -o "$WORK/one.st" --deterministic -t 1 2>/dev/null
b0=$(veth_bytes)
t0=$(now)
out=$(run_job 45 logits -m "$TINY" --tokens "$TOKS" -o "$WORK/two.st" --deterministic --tp 2 -t 1 2>&1)
rc=$?
secs=$(elapsed "$t0")
moved=$(($(veth_bytes) - b0))
if [[ $rc -eq 0 && -s $WORK/one.st ]] && cmp -s "$WORK/one.st" "$WORK/two.st" && ((moved >= floor)); then
  pass "two namespaces (TCP over a veth only): logits --tp 2 --deterministic [$secs s] rc 0: bitwise equal to one rank; veth $V0 carried $moved bytes (tx+rx; TP floor $floor)"
else
  fail "two namespaces (TCP over a veth only): logits --tp 2 --deterministic [$secs s] rc $rc, veth carried $moved bytes (floor $floor): $(tail -c 1500 <<<"$out")"
fi

# 2. generate: the same greedy tokens as one rank.
"$MOERUN" generate -m "$TINY" --tokens 1,2,3,4,5 -n 12 -t 1 >"$WORK/gen1.txt" 2>/dev/null
b0=$(veth_bytes)
t0=$(now)
run_job 45 generate -m "$TINY" --tokens 1,2,3,4,5 -n 12 --tp 2 -t 1 >"$WORK/gen2.txt" 2>"$WORK/gen2.err"
rc=$?
secs=$(elapsed "$t0")
moved=$(($(veth_bytes) - b0))
if [[ $rc -eq 0 && -s $WORK/gen1.txt ]] && cmp -s "$WORK/gen1.txt" "$WORK/gen2.txt"; then
  pass "two namespaces: generate --tp 2 [$secs s] rc 0: the same greedy tokens as one rank ($(head -c 120 "$WORK/gen2.txt" | tr '\n' ' ')); veth carried $moved bytes"
else
  fail "two namespaces: generate --tp 2 [$secs s] rc $rc: $(head -c 300 "$WORK/gen1.txt") vs $(head -c 300 "$WORK/gen2.txt") $(tail -c 1000 "$WORK/gen2.err")"
fi

# 3. Expert parallelism with data-parallel replicas across the link.
t0=$(now)
out=$(run_job 45 logits -m "$TINY" --tokens "$TOKS" -o "$WORK/ep.st" --deterministic --dp 2 --ep -t 1 2>&1)
rc=$?
secs=$(elapsed "$t0")
if [[ $rc -eq 0 ]] && cmp -s "$WORK/one.st" "$WORK/ep.st"; then
  pass "two namespaces: logits --dp 2 --ep --deterministic [$secs s] rc 0: bitwise equal to one rank"
else
  fail "two namespaces: logits --dp 2 --ep --deterministic [$secs s] rc $rc: $(tail -c 1500 <<<"$out")"
fi

# cut_case NAME STOP_RANK0: a long eval over the link; once it computes, the veth goes down (and,
# with STOP_RANK0=1, rank 0 is SIGSTOPped first, so only rank 1 can notice). mpirun must end
# non-zero within the deadline (5 s) + 10 s, naming the collective (operation, group, its number on the
# rank and, where labelled, what it carries: "layer L ..."), with no process left behind.
cut_case() {
  # deadline 5 s: it also bounds MPI_Init, whose PMIx handshake crosses the veth (slower when the
  # machine is loaded).
  local name=$1 stop0=$2 deadline=5
  # Re-join the link for this case (a previous case cut it).
  ip -n "$NS0" link set "$V0" up && ip -n "$NS1" link set "$V1" up
  run_job 120 eval -m "$TINY" --task "$WORK/long.jsonl" --batch 1 --tp 2 -t 1 --collective-timeout "$deadline" \
    >"$WORK/cut.out" 2>"$WORK/cut.err" &
  JOB=$!
  for _ in $(seq 300); do grep -qs "loaded in" "$WORK/cut.err" || ! kill -0 "$JOB" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  local rank0="" pid
  for pid in $(ip netns pids "$NS0"); do
    [[ $(readlink -f "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$MOERUN")" ]] && rank0=$pid
  done
  if [[ $stop0 == 1 ]]; then
    if [[ -z $rank0 ]]; then
      fail "$name [- s] rank 0 not found in $NS0: $(grep "moerun: error" "$WORK/cut.err") $(tail -c 1500 "$WORK/cut.err")"
      return
    fi
    kill -STOP "$rank0"
  fi
  # The time counts from the moment the link is down: `ip link set down` returns then. (It takes the
  # kernel's RTNL lock, which a namespace being torn down elsewhere can hold for seconds: its own
  # duration is reported apart.)
  local c0 cut_secs t0 rc secs
  c0=$(now)
  ip -n "$NS0" link set "$V0" down
  cut_secs=$(elapsed "$c0")
  t0=$(now)
  for _ in $(seq $(((deadline + 30) * 10))); do kill -0 "$JOB" 2>/dev/null || break; sleep 0.1; done
  secs=$(elapsed "$t0")
  if kill -0 "$JOB" 2>/dev/null; then  # still running: end it (mpirun and the ranks, by pid)
    for pid in $(ip netns pids "$NS0") $(ip netns pids "$NS1"); do kill -KILL "$pid" 2>/dev/null; done
  fi
  wait "$JOB"
  rc=$?
  JOB=""
  local left
  left=$(ip netns pids "$NS0"; ip netns pids "$NS1")
  local msgs
  msgs=$(grep -o "moerun: error.*" "$WORK/cut.err" | cut -c1-240 | sed 's/$/;/' | tr '\n' ' ')
  if [[ $rc -ne 0 && $rc -lt 124 && -z $left ]] && grep -q "no completion within ${deadline}000 ms \[collective #[0-9]* of this rank" "$WORK/cut.err" &&
      $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) + 10 else 1)" "$secs" "$deadline"; then
    pass "$name [$secs s] mpirun rc $rc, no process left in either namespace (the cut took $cut_secs s): $msgs"
  else
    fail "$name [$secs s] rc $rc (bound $((deadline + 10)) s; the cut took $cut_secs s), left: '$left': $(tail -c 2000 "$WORK/cut.err")"
  fi
}

# A long job: 20000 problems decoded one at a time (minutes). Not `bench`: its rank 0 measures the
# read bandwidth before MPI_Init, and on a loaded machine that probe can outlast the peer's MPI_Init
# deadline (the same --collective-timeout).
$PY -c "
import json
with open('$WORK/long.jsonl', 'w') as f:
    for i in range(20000): f.write(json.dumps({'prompt': f'{i % 97}+{i % 89}=', 'answer': str(i % 97 + i % 89)}) + '\\n')
"
# 4. The link cut under a running job: both ranks' collectives stall; each fails at its deadline.
cut_case "two namespaces: link cut (veth down) under eval --tp 2 (deadline 5 s)" 0
# 5. Rank 0 (beside mpirun) stopped, then the link cut: only rank 1 notices, and its MPI_Abort cannot
# reach mpirun over the dead link; moerun bounds the abort, exits, and mpirun ends the job.
cut_case "two namespaces: link cut with rank 0 stopped: rank 1's MPI_Abort cannot reach mpirun (deadline 5 s)" 1
finish
