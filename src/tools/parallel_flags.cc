#include "tools/parallel_flags.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "comm/in_process_comm.h"
#include "comm/mpi_comm.h"
#include "core/signals.h"
#include "core/thread_pool.h"
#include "tools/cli_util.h"

namespace moerun {

void ParallelFlags::Add(CLI::App* cmd) {
  cmd->add_option("--tp", tp, "Tensor-parallel ranks per replica")->check(CLI::Range(1, 1024));
  cmd->add_option("--dp", dp, "Data-parallel replicas")->check(CLI::Range(1, 1024));
  cmd->add_flag("--ep", ep, "Expert parallel: whole experts spread over all tp x dp ranks");
  cmd->add_flag("--sp", sp, "Sequence-parallel MoE (needs --tp > 1 and --ep)");
  cmd->add_option("--dispatch", dispatch, "How EP moves tokens: allgather|alltoall");
  cmd->add_flag("--deterministic", deterministic,
                "Bitwise-identical output on every layout (fixed-point sums)");
  cmd->add_flag("--shared-replicated", shared_replicated,
                "Replicate shared experts instead of TP-sharding them");
  cmd->add_flag(
      "--stats", stats,
      "Print every collective (group, bytes, states) of each forward pass as JSON on rank 0's stderr");
  cmd->add_option("--collective-timeout", collective_timeout,
                  "Seconds a rank waits in a collective for its peers before failing with the op and group")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->add_flag("--fault-reduce-shared", fault_reduce_shared,
                "Testing: all-reduce the shared-expert output once more (the vLLM #40560 bug)")
      ->group("Fault injection");
  cmd->add_flag("--unsafe-disable-state-checks", disable_state_checks,
                "Testing: let the injected fault through instead of refusing it")
      ->group("Fault injection");
  cmd->add_option("--fault-stall-rank", fault_stall_rank,
                  "Testing: this rank stops (SIGSTOP under mpirun, a sleep in-process) before collective "
                  "--fault-stall-at")
      ->check(AtLeast(0))
      ->group("Fault injection");
  cmd->add_option("--fault-stall-at", fault_stall_at,
                  "Testing: the collective (1, 2, ...) --fault-stall-rank stops at")
      ->check(AtLeast(1))
      ->group("Fault injection");
  cmd->add_option("--fault-disagree-rank", fault_disagree_rank,
                  "Testing: this rank's start-up fingerprint differs from the others'")
      ->group("Fault injection");
}

void ParallelFlags::AddFields(RankFingerprint* fp) const {
  fp->Add("--tp", std::to_string(tp));
  fp->Add("--dp", std::to_string(dp));
  fp->Add("--ep", ep ? "on" : "off");
  fp->Add("--sp", sp ? "on" : "off");
  fp->Add("--dispatch", dispatch);
  fp->Add("--deterministic", deterministic ? "on" : "off");
  fp->Add("--shared-replicated", shared_replicated ? "on" : "off");
  fp->Add("--fault-reduce-shared", fault_reduce_shared ? "on" : "off");
  fp->Add("--unsafe-disable-state-checks", disable_state_checks ? "on" : "off");
}

std::chrono::milliseconds ParallelFlags::Timeout() const {
  return std::chrono::milliseconds(static_cast<int64_t>(collective_timeout * 1000));
}

void ParallelFlags::ApplyTo(Communicator& world) const {
  world.set_timeout(Timeout());
  if (world.rank() != fault_stall_rank) return;
  const bool mpi = StartedByMpirun();
  const auto sleep = Timeout() + std::chrono::milliseconds(500);  // past the peers' deadline
  world.log()->set_stall(static_cast<uint64_t>(fault_stall_at), [mpi, sleep] {
    // A real stopped process under mpirun; in-process, a thread asleep past its peers' deadline.
    if (mpi) {
      std::raise(SIGSTOP);
    } else {
      std::this_thread::sleep_for(sleep);
    }
  });
}

StatusOr<ParallelOptions> ParallelFlags::ToOptions() const {
  ParallelOptions o;
  o.tp = tp;
  o.dp = dp;
  o.ep = ep;
  o.sp = sp;
  o.deterministic = deterministic;
  o.shared_replicated = shared_replicated;
  o.fault_reduce_shared = fault_reduce_shared;
  o.disable_state_checks = disable_state_checks;
  if (dispatch == "allgather") {
    o.dispatch = DispatchKind::kAllGather;
  } else if (dispatch == "alltoall") {
    o.dispatch = DispatchKind::kAllToAll;
  } else {
    return InvalidArgument("--dispatch '{}' is not one of allgather, alltoall", dispatch);
  }
  return o;
}

int DefaultThreadsPerProcess() {
  // Under mpirun, share this host's CPUs among the ranks started on it.
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  return std::max(1, DefaultThreadCount() / ranks_here);
}

namespace {

// Timeout and agreement, on every rank before its body (see RunOnRanks).
Status Agree(const ParallelFlags& flags, const RankFingerprint& agree, Communicator& world) {
  world.set_timeout(flags.Timeout());
  // A SIGINT / SIGTERM line names this rank's collective in flight: every MPI process's own rank,
  // in-process rank 0 for the process (core/signals.h).
  if (world.log() != nullptr && (StartedByMpirun() || world.rank() == 0))
    world.log()->PublishForSignals(world.rank());
  RankFingerprint mine = agree;
  flags.AddFields(&mine);
  if (world.rank() == flags.fault_disagree_rank) mine.Add("fault injection", "--fault-disagree-rank");
  return CheckRanksAgree(world, mine);
}

}  // namespace

Status RunOnRanks(const ParallelFlags& flags, int total_threads, const RankFingerprint& agree,
                  const std::function<Status(Communicator&, int)>& body) {
  if (StartedByMpirun()) {
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> world, MpiWorld(nullptr, nullptr, flags.Timeout()));
    // Every rank holds the same verdict: each reports it and exits non-zero, no abort needed.
    RETURN_IF_ERROR(Agree(flags, agree, *world));
    flags.ApplyTo(*world);
    Status s = body(*world, std::max(1, total_threads));
    // An interrupted command (core/signals.h's InterruptScope) stops on every rank together: no
    // abort (Open MPI's mpirun can crash finalising an abort that races its own signal handling),
    // and the error is reported once, by the caller.
    if (!s.ok() && world->size() > 1 && InterruptScope::Received() == 0) {
      std::fprintf(stderr, "moerun: error (rank %d of %d): %s\n", world->rank(), world->size(),
                   s.message().c_str());
      MpiAbort(1);
    }
    return s;
  }
  const int world_size = flags.tp * flags.dp;
  const int per_rank = std::max(1, total_threads / world_size);
  return RunRanks(world_size, [&](Communicator& comm) -> Status {
    RETURN_IF_ERROR(Agree(flags, agree, comm));
    flags.ApplyTo(comm);
    return body(comm, per_rank);
  });
}

std::string CollectivesJson(const std::vector<CollectiveRecord>& records) {
  std::string out = "[";
  for (size_t i = 0; i < records.size(); ++i) {
    const CollectiveRecord& r = records[i];
    out += fmt::format(
        "{}{{\"op\": \"{}\", \"group\": \"{}\", \"bytes\": {}, \"what\": \"{}\", \"from\": \"{}\", "
        "\"to\": \"{}\"}}",
        i ? ", " : "", r.op, r.group, r.bytes, r.what, r.from, r.to);
  }
  return out + "]";
}

void PrintStats(int layer, const std::vector<CollectiveRecord>& records) {
  std::fprintf(stderr, "{\"layer\": %d, \"collectives\": %s}\n", layer, CollectivesJson(records).c_str());
}

}  // namespace moerun
