// Communicator: the collectives a parallel MoE layer needs, over a group of ranks.
//
// Two implementations: InProcessWorld (ranks are threads of one process sharing memory; the
// default for --tp/--dp on one machine and for tests) and MpiCommunicator (one rank per process
// under mpirun). Every rank of a group must call the same collectives in the same order. Each
// call waits at most `timeout` for its peers and then fails with a DeadlineExceeded-style
// IOError naming the op and group (a lost peer must not hang the job). Waiting never spins
// unboundedly (condition variables in-process, sleep-polling non-blocking MPI requests).
//
// Reductions are on f32 (fast mode) or on 128-bit fixed-point integers (deterministic mode: an
// integer sum is exact, so its result does not depend on the order in which ranks combine).
// Every collective is recorded in the group's CollectiveLog (op, group name, bytes sent by this
// rank, and the label the caller set: what moved and its states before and after) so callers can
// report and test the collectives a layer performed.
//
// Thread safety: one Communicator object per rank; a rank's calls are sequential.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/signals.h"
#include "core/status.h"

namespace moerun {

enum class ReduceType { kF32Sum, kI128Sum };
size_t ReduceTypeSize(ReduceType t);  // 4 or 16

struct CollectiveRecord {
  std::string op;      // "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast"
  std::string group;   // "tp", "dp", "ep", "world"
  uint64_t bytes = 0;  // bytes this rank contributed
  // The caller's label at the time of the call (CollectiveLabel), e.g. "layer 3 o_proj output",
  // "Partial(tp)", "Complete(replicated over tp)"; empty when none was set.
  std::string what, from, to;
};

// A per-rank log of collectives, shared by a rank's communicators (world and sub-groups).
// Records are kept until Take()n, at most kMaxRecords (the oldest half is dropped beyond: a
// long-running server that never reads them stays bounded). Every recorded collective gets this
// rank's next sequence number (1, 2, ...; equal on every rank of a group while ranks stay in step),
// which a deadline error names with the label ("collective #57: layer 3 o_proj output"). Seconds per op
// accumulate for the life of the log and may be read from any thread (serving metrics).
class CollectiveLog {
 public:
  static constexpr size_t kMaxRecords = size_t{1} << 16;
  void Record(std::string op, std::string group, uint64_t bytes) {
    if (records_.size() >= kMaxRecords) records_.erase(records_.begin(), records_.begin() + kMaxRecords / 2);
    ++seq_;
    if (publish_rank_ >= 0) PublishCollectiveBegin(publish_rank_, op, group, seq_, label_.what);
    records_.push_back({std::move(op), std::move(group), bytes, label_.what, label_.from, label_.to});
    if (seq_ == stall_at_ && stall_) stall_();
  }
  // Called when the collective Record()ed last has completed (or failed).
  void Done() const {
    if (publish_rank_ >= 0) PublishCollectiveEnd();
  }
  // This log's collectives are the ones a SIGINT / SIGTERM line names (core/signals.h), as rank
  // `rank`'s. One log per process at most (the MPI rank's, or in-process rank 0's).
  void PublishForSignals(int rank) { publish_rank_ = rank; }
  // Sequence number of the last recorded collective (0: none yet).
  uint64_t seq() const { return seq_; }
  // " [collective #57 of this rank: layer 3 o_proj output]": appended to deadline errors.
  std::string InFlight() const {
    return fmt::format(" [collective #{} of this rank{}{}]", seq_, label_.what.empty() ? "" : ": ",
                       label_.what);
  }
  // Fault injection (testing): `stall` runs when collective #seq is recorded, before it is issued.
  void set_stall(uint64_t seq, std::function<void()> stall) {
    stall_at_ = seq;
    stall_ = std::move(stall);
  }
  void AddSeconds(const char* op, double seconds) {
    std::lock_guard<std::mutex> lock(seconds_mu_);
    seconds_[op] += seconds;
  }
  // Cumulative wall seconds this rank spent in each collective kind, e.g. {"all_reduce": 1.25}.
  std::map<std::string, double> SecondsByOp() const {
    std::lock_guard<std::mutex> lock(seconds_mu_);
    return seconds_;
  }
  std::vector<CollectiveRecord> Take() { return std::exchange(records_, {}); }

  struct Label {
    std::string what, from, to;
  };
  // The label recorded with the following collectives; returns the previous one.
  Label SetLabel(Label label) { return std::exchange(label_, std::move(label)); }

 private:
  std::vector<CollectiveRecord> records_;
  Label label_;
  uint64_t seq_ = 0;
  int publish_rank_ = -1;
  uint64_t stall_at_ = 0;
  std::function<void()> stall_;
  mutable std::mutex seconds_mu_;
  std::map<std::string, double> seconds_;
};

// Adds the time until its destruction to the log's seconds of `op` (Communicator::Record).
class CollectiveTimer {
 public:
  CollectiveTimer(CollectiveLog* log, const char* op)
      : log_(log), op_(op), start_(std::chrono::steady_clock::now()) {}
  ~CollectiveTimer() {
    if (!log_) return;
    log_->Done();
    log_->AddSeconds(op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  CollectiveTimer(const CollectiveTimer&) = delete;
  CollectiveTimer& operator=(const CollectiveTimer&) = delete;

 private:
  CollectiveLog* log_;
  const char* op_;
  std::chrono::steady_clock::time_point start_;
};

// Labels the collectives issued on `log` during its lifetime (restores the previous label).
class CollectiveLabel {
 public:
  CollectiveLabel(CollectiveLog* log, std::string what, std::string from = {}, std::string to = {})
      : log_(log) {
    if (log_) previous_ = log_->SetLabel({std::move(what), std::move(from), std::move(to)});
  }
  ~CollectiveLabel() {
    if (log_) log_->SetLabel(std::move(previous_));
  }
  CollectiveLabel(const CollectiveLabel&) = delete;
  CollectiveLabel& operator=(const CollectiveLabel&) = delete;

 private:
  CollectiveLog* log_;
  CollectiveLog::Label previous_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name in stats, e.g. "tp".
  const std::string& name() const { return name_; }
  CollectiveLog* log() const { return log_.get(); }

  // In place: data[i] = sum over ranks of data[i]. `count` elements of `type`.
  virtual Status AllReduce(void* data, size_t count, ReduceType type) = 0;
  // send holds sum(counts) elements (rank r's segment at offset sum(counts[0..r))); recv gets
  // this rank's segment summed over ranks: counts[rank()] elements.
  virtual Status ReduceScatter(const void* send, void* recv, std::span<const size_t> counts,
                               ReduceType type) = 0;
  // Concatenates every rank's bytes in rank order; recv_bytes[r] = bytes rank r sends.
  virtual Status AllGather(const void* send, void* recv, std::span<const size_t> recv_bytes) = 0;
  // send_bytes[r]: bytes for rank r (consecutive in send); recv_bytes[r]: bytes from rank r.
  virtual Status AllToAll(const void* send, std::span<const size_t> send_bytes, void* recv,
                          std::span<const size_t> recv_bytes) = 0;
  virtual Status Broadcast(void* data, size_t bytes, int root) = 0;
  virtual Status Barrier() = 0;
  // Collective: ranks with the same color form a new group, ordered by (key, rank).
  virtual StatusOr<std::unique_ptr<Communicator>> Split(int color, int key, std::string name) = 0;

  // Helpers built on the primitives.
  // Every rank's value, in rank order.
  StatusOr<std::vector<uint64_t>> AllGatherValue(uint64_t value);

  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  // What a deadline error appends: this rank's collective in flight (sequence number and label).
  std::string InFlight() const { return log_ ? log_->InFlight() : std::string(); }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  Communicator(std::string name, std::shared_ptr<CollectiveLog> log)
      : name_(std::move(name)), log_(std::move(log)) {}
  // Logs a collective; the returned timer, held for the collective's duration, adds its time.
  [[nodiscard]] CollectiveTimer Record(const char* op, uint64_t bytes) const {
    const bool logged = log_ && size() > 1;
    if (logged) log_->Record(op, name_, bytes);
    return CollectiveTimer(logged ? log_.get() : nullptr, op);
  }

  std::string name_;
  std::shared_ptr<CollectiveLog> log_;
  std::chrono::milliseconds timeout_{std::chrono::seconds(120)};
};

}  // namespace moerun
