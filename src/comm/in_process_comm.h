// In-process ranks: N threads of one process form a communicator world sharing memory.
//
// InProcessWorld::Create(n) returns one Communicator per rank; hand communicator r to the thread
// that plays rank r. A collective publishes each rank's buffers in a shared slot table, meets at
// a barrier, lets every rank read its peers' buffers directly (one copy, no staging), and meets
// again so no buffer is released while a peer still reads it. Reductions sum in rank order.
// Barriers block on a condition variable with the communicator's timeout: a missing peer
// yields an error, never a hang or a busy spin (a waiting rank wakes every 20 ms to see whether
// a rank of its world failed).
//
// RunRanks(n, fn) is the usual driver: it runs fn(comm) on n threads and returns the first error.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace moerun {

class InProcessWorld {
 public:
  // One communicator per rank, named "world", each with its own CollectiveLog.
  static std::vector<std::unique_ptr<Communicator>> Create(int n);
};

// Runs fn(rank communicator) on n threads (rank 0 on the calling thread) and joins them.
// When a rank's fn fails, every collective its peers wait in (in any group split from this world)
// fails within ~20 ms with "<op> on group '<g>': world rank r failed: <its error>", so no rank waits
// for its deadline. Returns the lowest rank's own error (not such a report), or OK.
Status RunRanks(int n, const std::function<Status(Communicator&)>& fn);

}  // namespace moerun
