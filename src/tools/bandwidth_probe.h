// BandwidthProbe: the read bandwidth of the moment for a benchmark's machine bound, probed while
// every rank waits (no rank computes meanwhile): by each process with its own threads (rank 0 of
// in-process ranks; every rank under mpirun, summed: the bandwidth all ranks share, on one host or
// many). Two labelled all-reduces bracket the probe, so a deadline error or a signal report names it
// ("... [collective #N: read-bandwidth probe]"). The host's bandwidth moves within seconds, so
// benchmarks probe just before and just after each timed run (docs/benchmarks.md).
// The probe's buffer is kept out of the peak RSS: the peak so far is kept in peak_rss() and the
// counter restarts after each probe.
// Thread safety: Now() is called by every rank of `world` together; only rank 0 of a process
// touches the state, and the accessors are for rank 0 afterwards.
#pragma once

#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace moerun {

// VmHWM of /proc/self/status: this process's peak resident set, in bytes (0 if unreadable).
double PeakRssBytes();
// Restarts the peak at the current RSS (Linux: "5" to /proc/self/clear_refs).
void ResetPeakRss();

// The probes just before and just after one timed run, GB/s; the run's bound uses their mean.
struct ReadProbes {
  double before = 0, after = 0;
  double Mean() const { return 0.5 * (before + after); }
};

class BandwidthProbe {
 public:
  explicit BandwidthProbe(int threads) : pool_(threads) {}

  // GB/s, the same value on every rank.
  StatusOr<double> Now(Communicator& world);
  double peak_rss() const;
  const std::vector<double>& all() const { return all_; }

 private:
  ThreadPool pool_;
  double peak_rss_ = 0;
  std::vector<double> all_;  // every probe of this run, GB/s
};

}  // namespace moerun
