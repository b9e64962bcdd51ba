// The layout flags shared by moe-layer and bench-moe (--tp, --dp, --ep, --sp, --dispatch,
// --deterministic, --shared-replicated, --stats), and the driver that runs a per-rank body on
// in-process ranks or, under mpirun, on this process's MPI rank after checking that every rank was
// started with the same flags, files and inputs (comm/rank_agreement.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "comm/communicator.h"
#include "comm/rank_agreement.h"
#include "moe/parallel_moe.h"

namespace moerun {

struct ParallelFlags {
  int tp = 1, dp = 1;
  bool ep = false, sp = false, deterministic = false, shared_replicated = false, stats = false;
  bool fault_reduce_shared = false, disable_state_checks = false;  // fault injection (testing)
  int fault_stall_rank = -1;  // testing: this rank stops at collective #fault_stall_at
  int64_t fault_stall_at = 1;
  int fault_disagree_rank = -1;  // testing: this rank's fingerprint gets an extra field
  std::string dispatch = "allgather";
  double collective_timeout = 120;  // seconds a rank waits in a collective before failing, e.g. 30

  void Add(CLI::App* cmd);
  std::chrono::milliseconds Timeout() const;
  // Sets the deadline on `world` (sub-groups split from it later inherit it) and the stall fault.
  void ApplyTo(Communicator& world) const;
  StatusOr<ParallelOptions> ToOptions() const;
  // The flags every rank must share (not --stats, --collective-timeout: they may differ).
  void AddFields(RankFingerprint* fp) const;
};

// Runs body(world, threads_per_rank) on every rank of the layout: under mpirun on this process
// (MPI_Init waits at most --collective-timeout), otherwise on tp x dp threads of this process.
// First, on every rank: the collective timeout (so --collective-timeout reaches every command),
// then CheckRanksAgree on `agree` plus the layout flags, so a rank started differently stops every
// rank with the same message before any weight is read. Under mpirun a body's error aborts the
// whole job (no rank hangs); a disagreement is reported by every rank, which then exits non-zero
// itself.
Status RunOnRanks(const ParallelFlags& flags, int total_threads, const RankFingerprint& agree,
                  const std::function<Status(Communicator&, int)>& body);

// Threads for this process when -t is not given: all CPUs, divided among the MPI ranks started
// on this host under mpirun.
int DefaultThreadsPerProcess();

// The records as a JSON array: [{"op", "group", "bytes", "what", "from", "to"}, ...].
std::string CollectivesJson(const std::vector<CollectiveRecord>& records);
// Prints {"layer": L, "collectives": [...]} on stderr.
void PrintStats(int layer, const std::vector<CollectiveRecord>& records);

}  // namespace moerun
