// Signals: what SIGINT and SIGTERM do to a moerun process.
//
// By default (InstallSignalReport, called once by main) either signal prints one last line saying
// what this rank was doing, then takes its default action (the process ends by the signal):
//   moerun: rank 1: SIGTERM received during all_reduce on group 'tp' [collective #57 of this
//           rank: layer 3 o_proj output]
//   moerun: rank 0: SIGTERM received while computing after collective #57 (layer 3 o_proj output)
//   moerun: SIGINT received                       (one rank: no collective to name)
// Under mpirun (which forwards SIGINT and SIGTERM to every rank as SIGTERM) each rank prints its
// own line, so a job stopped by a user or a scheduler says where every rank was.
//
// The rank whose collectives are reported publishes each one it starts and ends (one publisher per
// process: the MPI rank, or in-process rank 0; comm/communicator.h's CollectiveLog). The handler
// reads the publication under a sequence counter and, when it raced a write, names the sequence
// number alone. Everything the handler touches is a lock-free atomic: it is async-signal-safe.
//
// An InterruptScope (a long command that can stop cleanly, e.g. eval) turns the first signal into
// a flag the command polls; a second signal prints the line and ends the process, so an interrupt
// can never hang.
//
// Thread safety: Publish* from the one publishing thread; the rest from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moerun {

// Installs the SIGINT / SIGTERM handler described above (idempotent).
void InstallSignalReport();

// The publishing rank starts collective #seq: "op on group 'group'" and its label (e.g. "layer 3
// o_proj output"; truncated to fit a fixed buffer). `rank` is named in the line.
void PublishCollectiveBegin(int rank, std::string_view op, std::string_view group, uint64_t seq,
                            std::string_view label);
// The publishing rank's collective in flight completed (it is computing again).
void PublishCollectiveEnd();
// Forgets the publication (a new run in the same process; tests).
void ResetCollectivePublication();

// Writes the line the handler would print for `sig` (with a trailing newline) into buf[0, size);
// returns its length. Async-signal-safe.
size_t FormatSignalLine(int sig, char* buf, size_t size);

// While alive, the first SIGINT / SIGTERM only sets the flag InterruptSignal() returns; the
// previous behaviour comes back on destruction. Not nested.
class InterruptScope {
 public:
  InterruptScope();
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

  // The signal received (SIGINT or SIGTERM), or 0.
  static int Received();
};

}  // namespace moerun
