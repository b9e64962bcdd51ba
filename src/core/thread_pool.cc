#include "core/thread_pool.h"

#include <algorithm>
#include <cassert>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#define MOERUN_CPU_RELAX() _mm_pause()
#else
#define MOERUN_CPU_RELAX() ((void)0)
#endif

namespace moerun {
namespace {

// The pool whose task this thread is running, and the thread's index in it (nested loops).
thread_local const ThreadPool* tls_pool = nullptr;
thread_local int tls_thread = 0;

}  // namespace

void ParallelForOn(ThreadPool* pool, int64_t n_tasks, const ThreadPool::TaskFn& fn) {
  if (pool != nullptr) return pool->ParallelFor(n_tasks, fn);
  for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
}

int DefaultThreadCount() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

namespace {

constexpr uint64_t PackRange(int64_t next, int64_t end) {
  return static_cast<uint64_t>(next) | (static_cast<uint64_t>(end) << 32);
}
constexpr int64_t RangeNext(uint64_t v) { return static_cast<int64_t>(v & 0xffffffffu); }
constexpr int64_t RangeEnd(uint64_t v) { return static_cast<int64_t>(v >> 32); }
constexpr int64_t RangeLeft(uint64_t v) { return std::max<int64_t>(0, RangeEnd(v) - RangeNext(v)); }

}  // namespace

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(n_threads), ranges_(new TaskRange[static_cast<size_t>(n_threads) * kMaxStreams]) {
  assert(n_threads >= 1);
  try {
    for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { WorkerLoop(t); });
  } catch (const std::system_error& e) {
    // Creation failed part-way (e.g. a process limit): stop and join the workers already started
    // (the destructor does not run for a throwing constructor), then report the bound.
    const size_t started = workers_.size() + 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& w : workers_) w.join();
    throw std::runtime_error("cannot start thread " + std::to_string(started + 1) + " of " +
                             std::to_string(n_threads_) + " (" + e.what() +
                             "); lower -t/--threads or raise the process limit (ulimit -u)");
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::RunTasks(int thread) {
  // This thread runs this pool's tasks (nested loops run inline); restored also when a task throws.
  struct TlsScope {
    const ThreadPool* pool = tls_pool;
    int thread = tls_thread;
    ~TlsScope() {
      tls_pool = pool;
      tls_thread = thread;
    }
  } outer;
  tls_pool = this;
  tls_thread = thread;
  for (;;) {
    int64_t group[kMaxStreams];
    const int n = group_fn_ != nullptr ? ClaimGroup(thread, group) : 0;
    const int64_t task = group_fn_ != nullptr ? -1 : ClaimTask(thread);
    if (n == 0 && task < 0) break;
    try {
      if (n > 0) {
        (*group_fn_)(std::span<const int64_t>(group, static_cast<size_t>(n)), thread);
      } else {
        (*fn_)(task, thread);
      }
    } catch (...) {
      // End the loop. ParallelFor rethrows after WaitForWorkers, never while a worker may still
      // run a task that uses the caller's frame (a task thrown on the caller used to unwind that
      // frame under running workers, a data race on its locals; one thrown on a worker ended the
      // process).
      EndClaims();
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
      break;
    }
  }
}

int64_t ThreadPool::ClaimTask(int thread) {
  if (streams_ > 0) return ClaimContiguous(thread);
  const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
  return task < n_tasks_ ? task : -1;
}

int64_t ThreadPool::ClaimContiguous(int thread) {
  const int64_t task = ClaimFront(thread);
  return task >= 0 ? task : StealBack();
}

int ThreadPool::ClaimGroup(int thread, int64_t* tasks) {
  if (streams_ == 0) {  // past kMaxContiguousTasks: single tasks from the shared counter
    tasks[0] = ClaimTask(thread);
    return tasks[0] >= 0 ? 1 : 0;
  }
  int n = 0;
  for (int s = 0; s < streams_; ++s) {
    const int64_t task = ClaimFront(thread * streams_ + s);
    if (task >= 0) tasks[n++] = task;
  }
  if (n == 0 && (tasks[0] = StealBack()) >= 0) n = 1;
  return n;
}

int64_t ThreadPool::ClaimFront(int range) {
  std::atomic<uint64_t>& own = ranges_[range].next_end;
  uint64_t v = own.load(std::memory_order_relaxed);
  while (RangeLeft(v) > 0) {
    if (own.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return RangeNext(v);
  }
  return -1;
}

int64_t ThreadPool::StealBack() {
  const int n_ranges = n_threads_ * streams_;
  for (;;) {
    int victim = -1;
    int64_t most = 0;
    for (int r = 0; r < n_ranges; ++r) {
      const int64_t left = RangeLeft(ranges_[r].next_end.load(std::memory_order_relaxed));
      if (left > most) {
        most = left;
        victim = r;
      }
    }
    if (victim < 0) return -1;
    std::atomic<uint64_t>& range = ranges_[victim].next_end;
    uint64_t v = range.load(std::memory_order_relaxed);
    while (RangeLeft(v) > 0) {
      if (range.compare_exchange_weak(v, v - (uint64_t{1} << 32), std::memory_order_relaxed))
        return RangeEnd(v) - 1;
    }
  }
}

void ThreadPool::EndClaims() {
  next_task_.store(n_tasks_, std::memory_order_relaxed);
  for (int r = 0; r < n_threads_ * kMaxStreams; ++r)
    ranges_[r].next_end.store(PackRange(0, 0), std::memory_order_relaxed);
}

void ThreadPool::ParallelFor(int64_t n_tasks, const TaskFn& fn) { Run(n_tasks, &fn, nullptr, 0); }

void ThreadPool::ParallelForContiguous(int64_t n_tasks, const TaskFn& fn) {
  Run(n_tasks, &fn, nullptr, n_tasks <= kMaxContiguousTasks ? 1 : 0);
}

void ThreadPool::ParallelForStreams(int64_t n_tasks, int streams, const GroupFn& fn) {
  assert(streams >= 1 && streams <= kMaxStreams);
  Run(n_tasks, nullptr, &fn, n_tasks <= kMaxContiguousTasks ? streams : 0);
}

void ThreadPool::RunInline(int64_t n_tasks, const TaskFn* fn, const GroupFn* group_fn, int streams,
                           int thread) {
  if (group_fn == nullptr) {
    for (int64_t i = 0; i < n_tasks; ++i) (*fn)(i, thread);
    return;
  }
  // The same ranges one thread of ParallelForStreams would own, in lockstep.
  const int64_t per = (n_tasks + streams - 1) / streams;
  for (int64_t j = 0; j < per; ++j) {
    int64_t group[kMaxStreams];
    int n = 0;
    for (int s = 0; s < streams; ++s) {
      const int64_t task = s * n_tasks / streams + j;
      if (task < (s + 1) * n_tasks / streams) group[n++] = task;
    }
    if (n > 0) (*group_fn)(std::span<const int64_t>(group, static_cast<size_t>(n)), thread);
  }
}

void ThreadPool::Run(int64_t n_tasks, const TaskFn* fn, const GroupFn* group_fn, int streams) {
  if (n_tasks <= 0) return;
  const bool nested = tls_pool == this;             // inside one of this pool's tasks
  if (nested || n_threads_ == 1 || n_tasks == 1) {  // inline, as one thread would
    RunInline(n_tasks, fn, group_fn, std::max(1, streams), nested ? tls_thread : 0);
    return;
  }
  // Every worker finished the previous loop (the wait below), so none reads these while they
  // change; the generation's increment publishes them.
  fn_ = fn;
  group_fn_ = group_fn;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  streams_ = streams;
  const int64_t n_ranges = int64_t{n_threads_} * streams;
  for (int64_t r = 0; r < n_ranges; ++r) {
    ranges_[r].next_end.store(PackRange(r * n_tasks / n_ranges, (r + 1) * n_tasks / n_ranges),
                              std::memory_order_relaxed);
  }
  active_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  // A worker that stopped spinning registered as a sleeper before its last look at the
  // generation (both seq_cst), so either it saw the new one or it is counted here.
  if (sleeping_workers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }  // a registered sleeper is now inside wait()
    work_cv_.notify_all();
  }
  RunTasks(0);
  WaitForWorkers();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void ThreadPool::WaitForWorkers() {
  // Bounded spin, then block. The acquire (or the mutex) orders every worker's writes in this
  // loop, including error_, before the caller's next step.
  for (int i = 0; i < kSpinIterations; ++i) {
    if (active_workers_.load(std::memory_order_acquire) == 0) return;
    MOERUN_CPU_RELAX();
  }
  std::unique_lock<std::mutex> lock(mu_);
  caller_sleeping_.store(true, std::memory_order_seq_cst);
  done_cv_.wait(lock, [this] { return active_workers_.load(std::memory_order_seq_cst) == 0; });
  caller_sleeping_.store(false, std::memory_order_relaxed);
}

void ThreadPool::WorkerLoop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    // Bounded spin for the next generation, then block.
    uint64_t now = seen;
    for (int i = 0; i < kSpinIterations && now == seen; ++i) {
      MOERUN_CPU_RELAX();
      now = generation_.load(std::memory_order_acquire);
    }
    if (now == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
      work_cv_.wait(lock, [&] {
        now = generation_.load(std::memory_order_seq_cst);
        return stop_ || now != seen;
      });
      sleeping_workers_.fetch_sub(1, std::memory_order_relaxed);
      if (stop_) return;
    }
    seen = now;
    RunTasks(thread);
    if (active_workers_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_sleeping_.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace moerun
