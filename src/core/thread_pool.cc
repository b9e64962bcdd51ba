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

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads), ranges_(new TaskRange[n_threads]) {
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
    const int64_t task = ClaimTask(thread);
    if (task < 0) break;
    try {
      (*fn_)(task, thread);
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
  if (contiguous_) return ClaimContiguous(thread);
  const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
  return task < n_tasks_ ? task : -1;
}

int64_t ThreadPool::ClaimContiguous(int thread) {
  std::atomic<uint64_t>& own = ranges_[thread].next_end;
  uint64_t v = own.load(std::memory_order_relaxed);
  while (RangeLeft(v) > 0) {  // the front of this thread's range
    if (own.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return RangeNext(v);
  }
  for (;;) {  // the back of the range with the most left
    int victim = -1;
    int64_t most = 0;
    for (int t = 0; t < n_threads_; ++t) {
      const int64_t left = RangeLeft(ranges_[t].next_end.load(std::memory_order_relaxed));
      if (left > most) {
        most = left;
        victim = t;
      }
    }
    if (victim < 0) return -1;
    std::atomic<uint64_t>& range = ranges_[victim].next_end;
    v = range.load(std::memory_order_relaxed);
    while (RangeLeft(v) > 0) {
      if (range.compare_exchange_weak(v, v - (uint64_t{1} << 32), std::memory_order_relaxed))
        return RangeEnd(v) - 1;
    }
  }
}

void ThreadPool::EndClaims() {
  next_task_.store(n_tasks_, std::memory_order_relaxed);
  for (int t = 0; t < n_threads_; ++t) ranges_[t].next_end.store(PackRange(0, 0), std::memory_order_relaxed);
}

void ThreadPool::ParallelFor(int64_t n_tasks, const TaskFn& fn) { Run(n_tasks, fn, false); }

void ThreadPool::ParallelForContiguous(int64_t n_tasks, const TaskFn& fn) {
  Run(n_tasks, fn, n_tasks <= kMaxContiguousTasks);
}

void ThreadPool::Run(int64_t n_tasks, const TaskFn& fn, bool contiguous) {
  if (n_tasks <= 0) return;
  if (tls_pool == this) {  // nested inside one of this pool's tasks: inline
    for (int64_t i = 0; i < n_tasks; ++i) fn(i, tls_thread);
    return;
  }
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
    return;
  }
  // Every worker finished the previous loop (the wait below), so none reads these while they
  // change; the generation's increment publishes them.
  fn_ = &fn;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  contiguous_ = contiguous;
  if (contiguous) {
    for (int t = 0; t < n_threads_; ++t) {
      ranges_[t].next_end.store(PackRange(t * n_tasks / n_threads_, (t + 1) * n_tasks / n_threads_),
                                std::memory_order_relaxed);
    }
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
