// ThreadPool: a fixed set of worker threads running parallel-for loops.
//
// ParallelFor(n, fn) runs fn(task, thread) for every task in [0, n) exactly once, spread over the
// calling thread plus (size() - 1) workers, and returns when all tasks are done. Tasks are taken
// from a shared atomic counter (dynamic scheduling), so a preempted thread delays only the tasks
// it holds. Waiting never spins unboundedly: a thread spins for at most kSpinIterations polls,
// then blocks on a condition variable (on a shared 2-vCPU host a spinning peer can stall the run).
//
// ParallelForContiguous(n, fn) is the same loop for tasks whose neighbours read neighbouring memory
// (decode's weight streams): thread t starts with the t-th of size() near-equal contiguous ranges of
// [0, n) and runs it in order, so each thread reads one stream the hardware prefetchers can follow
// instead of taking turns with its peers along one; a thread whose range is done takes tasks from
// the end of the range with the most left, so a preempted thread delays only its current task.
//
// ParallelForStreams(n, streams, fn) cuts [0, n) into size() x `streams` contiguous ranges, thread t
// owning ranges [t x streams, (t + 1) x streams); each call fn(tasks, thread) gets the next task of
// each of the thread's ranges that has one, so the thread works along `streams` memory streams at
// once (one core reads several streams faster than one). A thread whose ranges are done takes
// single tasks from the end of the range with the most left.
//
// A task that throws ends the loop: no thread starts another of its tasks, and ParallelFor
// rethrows the first exception once every worker has left the loop (so no task still uses the
// caller's frame while it unwinds); the pool stays usable.
//
// Thread safety: ParallelFor must be called from one thread at a time. Called from inside one of
// this pool's tasks (a nested loop, e.g. a tensor source filling a tensor while experts are packed
// in parallel), it runs its tasks inline on that thread, with that thread's index. `thread` in fn
// is in [0, size()), 0 = the caller.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace moerun {

class ThreadPool {
 public:
  // REQUIRES: n_threads >= 1.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  using TaskFn = std::function<void(int64_t task, int thread)>;
  void ParallelFor(int64_t n_tasks, const TaskFn& fn);
  // More than kMaxContiguousTasks tasks (a range's bounds are 32-bit) take ParallelFor's schedule.
  void ParallelForContiguous(int64_t n_tasks, const TaskFn& fn);
  static constexpr int64_t kMaxContiguousTasks = (int64_t{1} << 31) - 1;
  // tasks: 1 .. streams task indices, in range order.
  using GroupFn = std::function<void(std::span<const int64_t> tasks, int thread)>;
  // REQUIRES: 1 <= streams <= kMaxStreams. More than kMaxContiguousTasks tasks: single tasks in
  // ParallelFor's schedule.
  void ParallelForStreams(int64_t n_tasks, int streams, const GroupFn& fn);
  static constexpr int kMaxStreams = 4;

  static constexpr int kSpinIterations = 4000;  // ~10-50 us of polling before blocking

 private:
  // One thread's contiguous range of a ParallelForContiguous loop: its next task in the low 32
  // bits, its end in the high 32 bits (one word, so the owner taking the front and a peer taking
  // the back never both get the last task). On its own cache line.
  struct alignas(64) TaskRange {
    std::atomic<uint64_t> next_end{0};
  };

  // streams: 0 = the shared counter, else that many contiguous ranges per thread.
  void Run(int64_t n_tasks, const TaskFn* fn, const GroupFn* group_fn, int streams);
  void RunInline(int64_t n_tasks, const TaskFn* fn, const GroupFn* group_fn, int streams, int thread);
  void WorkerLoop(int thread);
  void RunTasks(int thread);
  // The next task `thread` runs, or -1 when the loop has none left.
  int64_t ClaimTask(int thread);
  int64_t ClaimContiguous(int thread);
  int64_t ClaimFront(int range);
  int64_t StealBack();  // the last task of the range with the most left, or -1
  // The next task of each of the thread's ranges; a stolen one when they are done. Returns the count.
  int ClaimGroup(int thread, int64_t* tasks);
  // After a task threw: every later claim finds no task (tasks already claimed still run).
  void EndClaims();
  void WaitForWorkers();

  const int n_threads_;
  std::vector<std::thread> workers_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // workers wait here for a new generation
  std::condition_variable done_cv_;  // the caller waits here for the last worker
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;  // guarded by mu_

  // State of the current loop (valid while a generation is running).
  const TaskFn* fn_ = nullptr;
  const GroupFn* group_fn_ = nullptr;  // ParallelForStreams' fn (fn_ is null then)
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};    // ParallelFor's shared counter
  int streams_ = 0;                      // ranges per thread; 0: tasks come from next_task_
  std::unique_ptr<TaskRange[]> ranges_;  // [size() x kMaxStreams]
  std::atomic<int> active_workers_{0};
  // The first exception a task of the current loop threw (guarded by mu_ while workers run; the
  // caller reads it after WaitForWorkers, whose acquire orders every worker's write before).
  std::exception_ptr error_;
  // Who blocked instead of spinning: only then does the other side take mu_ to wake it.
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
};

// pool->ParallelFor(n_tasks, fn), or every task in order on the calling thread (as thread 0) when
// pool is null: for code that may run without a pool.
void ParallelForOn(ThreadPool* pool, int64_t n_tasks, const ThreadPool::TaskFn& fn);

// Default thread count: the number of online CPUs (at least 1).
int DefaultThreadCount();

}  // namespace moerun
