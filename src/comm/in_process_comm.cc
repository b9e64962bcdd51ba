#include "comm/in_process_comm.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>

#include "core/fixed_point.h"

namespace moerun {
namespace {

// What a rank publishes for one collective.
struct Slot {
  const void* send = nullptr;
  void* recv = nullptr;
  const size_t* send_counts = nullptr;  // per peer (bytes or elements, op-specific)
  const size_t* recv_counts = nullptr;
  int color = 0, key = 0;
  void* shared = nullptr;  // Split: the new group created by the color's first member
};

// What every group of one in-process world shares: whether a rank's body failed (RunRanks), so
// ranks waiting for it in any group stop at once instead of at their deadline.
struct WorldState {
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string why;  // "world rank 1 failed: <its error>"
  Status first;     // the first failure: the cause, not a peer's report of it
};

// How long a waiting rank sleeps between looks at WorldState::failed.
constexpr std::chrono::milliseconds kFailurePoll{20};

// State shared by the ranks of one group.
class Group {
 public:
  Group(int n, std::shared_ptr<WorldState> world)
      : n_(n), slots_(static_cast<size_t>(n)), world_(std::move(world)) {}
  const std::shared_ptr<WorldState>& world() const { return world_; }

  int size() const { return n_; }
  Slot& slot(int r) { return slots_[static_cast<size_t>(r)]; }

  // Blocks until all n ranks arrive, the timeout passes or a rank of the world fails.
  // reads_follow: after this barrier the ranks read each other's published buffers (every barrier
  // of a collective but its last). A rank that leaves with an error first waits until every peer
  // still reading from the previous barrier has arrived: its buffers (a stack array, the caller's
  // tensor) may be freed or reused as soon as it returns, so leaving earlier let a slow peer's
  // memcpy read freed memory, a data race. The wait is bounded: a reading peer only copies before
  // it arrives here (no collective, no deadline involved).
  Status Barrier(std::chrono::milliseconds timeout, const char* op, const std::string& name,
                 bool reads_follow) {
    std::unique_lock<std::mutex> lock(mu_);
    if (reading_ > 0 && --reading_ == 0) cv_.notify_all();  // this rank no longer reads its peers
    if (broken_) return Leave(lock, Broken(op, name));
    const uint64_t gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      reading_ = reads_follow ? n_ : 0;
      cv_.notify_all();
      return Status::Ok();
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (generation_ == gen && !broken_) {
      if (world_->failed.load()) {
        broken_ = true;
        cv_.notify_all();
        {
          std::lock_guard<std::mutex> why_lock(world_->mu);
          reason_ = world_->why;
        }
        return Leave(lock,
                     Status(StatusCode::kIOError, fmt::format("{} on group '{}': {}", op, name, reason_)));
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        broken_ = true;  // the group cannot be used again: peers are out of step
        cv_.notify_all();
        reason_ = fmt::format("{} on group '{}' ({} ranks): a peer did not arrive within {} ms", op, name, n_,
                              timeout.count());
        return Leave(lock, Status(StatusCode::kIOError, reason_));
      }
      cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(kFailurePoll, deadline - now));
    }
    if (broken_ && generation_ == gen) return Leave(lock, Broken(op, name));
    return Status::Ok();
  }

  std::mutex& split_mu() { return split_mu_; }
  std::map<int, std::shared_ptr<Group>>& split_groups() { return split_groups_; }

 private:
  // mu_ held: returns s once no peer still reads buffers published before the last barrier.
  Status Leave(std::unique_lock<std::mutex>& lock, Status s) {
    cv_.wait(lock, [this] { return reading_ == 0; });
    return s;
  }

  // mu_ held.
  Status Broken(const char* op, const std::string& name) const {
    return Status(StatusCode::kIOError,
                  fmt::format("{} on group '{}': the group failed earlier ({})", op, name, reason_));
  }

  const int n_;
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  int reading_ = 0;  // ranks past a reads_follow barrier that have not arrived at the next one
  bool broken_ = false;
  std::string reason_;  // the first deadline error, once broken_
  std::mutex split_mu_;
  std::map<int, std::shared_ptr<Group>> split_groups_;  // per Split call: color -> group
  std::shared_ptr<WorldState> world_;
};

void AddInto(void* dst, const void* src, size_t count, ReduceType type) {
  if (type == ReduceType::kF32Sum) {
    auto* d = static_cast<float*>(dst);
    const auto* s = static_cast<const float*>(src);
    for (size_t i = 0; i < count; ++i) d[i] += s[i];
  } else {
    auto* d = static_cast<Fixed128*>(dst);
    const auto* s = static_cast<const Fixed128*>(src);
    for (size_t i = 0; i < count; ++i) d[i] += s[i];
  }
}

class InProcessComm final : public Communicator {
 public:
  InProcessComm(std::shared_ptr<Group> group, int rank, std::string name, std::shared_ptr<CollectiveLog> log)
      : Communicator(std::move(name), std::move(log)), group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  const std::shared_ptr<WorldState>& world_state() const { return group_->world(); }

  // Waits for every rank of the group; a deadline error names this rank's collective in flight.
  // Sync: the ranks then read each other's slots and buffers; SyncDone: the collective's last
  // barrier, after which no rank reads a peer's buffer.
  Status Sync(const char* op) { return SyncImpl(op, true); }
  Status SyncDone(const char* op) { return SyncImpl(op, false); }
  Status SyncImpl(const char* op, bool reads_follow) {
    Status s = group_->Barrier(timeout_, op, name_, reads_follow);
    if (s.ok()) return s;
    return Status(s.code(), s.message() + InFlight());
  }

  Status AllReduce(void* data, size_t count, ReduceType type) override {
    const CollectiveTimer timer = Record("all_reduce", count * ReduceTypeSize(type));
    if (size() == 1) return Status::Ok();
    // Each rank sums its own segment over all ranks (rank order) into a private buffer, then
    // everyone copies the finished segments: deterministic and one read per element per rank.
    const size_t esize = ReduceTypeSize(type);
    const size_t n = static_cast<size_t>(size()), seg = (count + n - 1) / n;
    const size_t begin = std::min(count, seg * static_cast<size_t>(rank_)),
                 end = std::min(count, begin + seg);
    std::vector<std::byte> mine((end - begin) * esize);
    Slot& s = group_->slot(rank_);
    s.send = data;
    s.recv = mine.data();
    RETURN_IF_ERROR(Sync("all_reduce"));
    if (end > begin) {
      std::memcpy(mine.data(), static_cast<const std::byte*>(group_->slot(0).send) + begin * esize,
                  mine.size());
      for (int r = 1; r < size(); ++r) {
        AddInto(mine.data(), static_cast<const std::byte*>(group_->slot(r).send) + begin * esize, end - begin,
                type);
      }
    }
    RETURN_IF_ERROR(Sync("all_reduce"));  // every segment is summed
    for (int r = 0; r < size(); ++r) {
      const size_t b = std::min(count, seg * static_cast<size_t>(r)), e = std::min(count, b + seg);
      if (e > b)
        std::memcpy(static_cast<std::byte*>(data) + b * esize, group_->slot(r).recv, (e - b) * esize);
    }
    return SyncDone("all_reduce");  // peers are done reading `mine`
  }

  Status ReduceScatter(const void* send, void* recv, std::span<const size_t> counts,
                       ReduceType type) override {
    size_t total = 0;
    for (size_t c : counts) total += c;
    const CollectiveTimer timer = Record("reduce_scatter", total * ReduceTypeSize(type));
    const size_t esize = ReduceTypeSize(type);
    size_t offset = 0;
    for (int r = 0; r < rank_; ++r) offset += counts[static_cast<size_t>(r)];
    const size_t mine = counts[static_cast<size_t>(rank_)];
    group_->slot(rank_).send = send;
    RETURN_IF_ERROR(Sync("reduce_scatter"));
    if (mine > 0) {
      std::memcpy(recv, static_cast<const std::byte*>(group_->slot(0).send) + offset * esize, mine * esize);
      for (int r = 1; r < size(); ++r) {
        AddInto(recv, static_cast<const std::byte*>(group_->slot(r).send) + offset * esize, mine, type);
      }
    }
    return SyncDone("reduce_scatter");
  }

  Status AllGather(const void* send, void* recv, std::span<const size_t> recv_bytes) override {
    const CollectiveTimer timer = Record("all_gather", recv_bytes[static_cast<size_t>(rank_)]);
    group_->slot(rank_).send = send;
    RETURN_IF_ERROR(Sync("all_gather"));
    size_t offset = 0;
    for (int r = 0; r < size(); ++r) {
      const size_t b = recv_bytes[static_cast<size_t>(r)];
      if (b > 0) std::memcpy(static_cast<std::byte*>(recv) + offset, group_->slot(r).send, b);
      offset += b;
    }
    return SyncDone("all_gather");
  }

  Status AllToAll(const void* send, std::span<const size_t> send_bytes, void* recv,
                  std::span<const size_t> recv_bytes) override {
    size_t total = 0;
    for (size_t b : send_bytes) total += b;
    const CollectiveTimer timer = Record("all_to_all", total);
    Slot& s = group_->slot(rank_);
    s.send = send;
    s.send_counts = send_bytes.data();
    RETURN_IF_ERROR(Sync("all_to_all"));
    size_t recv_offset = 0;
    for (int r = 0; r < size(); ++r) {
      const Slot& peer = group_->slot(r);
      size_t src_offset = 0;
      for (int q = 0; q < rank_; ++q) src_offset += peer.send_counts[q];
      const size_t b = peer.send_counts[rank_];
      if (b != recv_bytes[static_cast<size_t>(r)]) {
        // Still meet the peers at the closing barrier before reporting.
        (void)SyncDone("all_to_all");
        return Internal("all_to_all on group '{}': rank {} sends {} bytes to rank {}, which expects {}",
                        name_, r, b, rank_, recv_bytes[static_cast<size_t>(r)]);
      }
      if (b > 0)
        std::memcpy(static_cast<std::byte*>(recv) + recv_offset,
                    static_cast<const std::byte*>(peer.send) + src_offset, b);
      recv_offset += b;
    }
    return SyncDone("all_to_all");
  }

  Status Broadcast(void* data, size_t bytes, int root) override {
    const CollectiveTimer timer = Record("broadcast", rank_ == root ? bytes : 0);
    group_->slot(rank_).send = data;
    RETURN_IF_ERROR(Sync("broadcast"));
    if (rank_ != root && bytes > 0) std::memcpy(data, group_->slot(root).send, bytes);
    return SyncDone("broadcast");
  }

  Status Barrier() override { return SyncDone("barrier"); }

  StatusOr<std::unique_ptr<Communicator>> Split(int color, int key, std::string name) override {
    Slot& s = group_->slot(rank_);
    s.color = color;
    s.key = key;
    RETURN_IF_ERROR(Sync("split"));
    // Members of my color, ordered by (key, rank).
    std::vector<std::pair<int, int>> members;
    for (int r = 0; r < size(); ++r) {
      if (group_->slot(r).color == color) members.push_back({group_->slot(r).key, r});
    }
    std::sort(members.begin(), members.end());
    int new_rank = 0;
    for (size_t i = 0; i < members.size(); ++i)
      if (members[i].second == rank_) new_rank = static_cast<int>(i);
    std::shared_ptr<Group> g;
    {
      std::lock_guard<std::mutex> lock(group_->split_mu());
      auto& groups = group_->split_groups();
      auto it = groups.find(color);
      if (it == groups.end())
        it = groups.emplace(color, std::make_shared<Group>(static_cast<int>(members.size()), group_->world()))
                 .first;
      g = it->second;
    }
    RETURN_IF_ERROR(SyncDone("split"));  // everyone holds its group
    if (rank_ == 0) {
      std::lock_guard<std::mutex> lock(group_->split_mu());
      group_->split_groups().clear();  // the next Split starts afresh
    }
    RETURN_IF_ERROR(SyncDone("split"));
    auto comm = std::make_unique<InProcessComm>(std::move(g), new_rank, std::move(name), log_);
    comm->set_timeout(timeout_);
    return std::unique_ptr<Communicator>(std::move(comm));
  }

 private:
  std::shared_ptr<Group> group_;
  int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> InProcessWorld::Create(int n) {
  auto group = std::make_shared<Group>(n, std::make_shared<WorldState>());
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < n; ++r) {
    comms.push_back(std::make_unique<InProcessComm>(group, r, "world", std::make_shared<CollectiveLog>()));
  }
  return comms;
}

namespace {

// fn on one rank; an exception (allocation failure, a thread that could not start) becomes that
// rank's error instead of terminating the process from a rank thread.
Status RunGuarded(const std::function<Status(Communicator&)>& fn, Communicator& comm) {
  try {
    return fn(comm);
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("rank {}: out of memory (an allocation failed)", comm.rank());
  } catch (const std::exception& e) {
    return Internal("rank {}: {}", comm.rank(), e.what());
  }
}

}  // namespace

Status RunRanks(int n, const std::function<Status(Communicator&)>& fn) {
  std::vector<std::unique_ptr<Communicator>> comms = InProcessWorld::Create(n);
  const std::shared_ptr<WorldState> world = static_cast<InProcessComm&>(*comms[0]).world_state();
  std::vector<Status> results(static_cast<size_t>(n));
  auto run = [&](int r) {
    const Status s = RunGuarded(fn, *comms[static_cast<size_t>(r)]);
    results[static_cast<size_t>(r)] = s;
    if (s.ok()) return;
    std::lock_guard<std::mutex> lock(world->mu);
    if (world->failed.load()) return;  // a report of the first failure, or a second one
    world->first = s;
    world->why = fmt::format("world rank {} failed: {}", r, s.message());
    world->failed.store(true);
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < n; ++r) threads.emplace_back(run, r);
  run(0);
  for (auto& t : threads) t.join();
  // The lowest rank's own error (not a report of another rank's), as when ranks fail together.
  for (const Status& s : results)
    if (!s.ok() && s.message().find(world->why) == std::string::npos) return s;
  return world->first;
}

}  // namespace moerun
