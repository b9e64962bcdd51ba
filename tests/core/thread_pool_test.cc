#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace moerun {
namespace {

TEST(ThreadPoolTest, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> bad_thread{0};
      pool.ParallelFor(n, [&](int64_t t, int thread) {
        hits[static_cast<size_t>(t)].fetch_add(1);
        if (thread < 0 || thread >= threads) bad_thread = 1;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1) << threads << " threads, " << n << " tasks";
      EXPECT_EQ(bad_thread.load(), 0);
    }
  }
}

TEST(ThreadPoolTest, ManyConsecutiveLoops) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int round = 0; round < 2000; ++round) {
    pool.ParallelFor(3, [&](int64_t t, int) { sum.fetch_add(t + 1); });
  }
  EXPECT_EQ(sum.load(), 2000 * 6);
}

// A loop inside a task (e.g. a synthetic tensor filled while experts are packed in parallel) runs
// inline on that task's thread instead of deadlocking the pool.
TEST(ThreadPoolTest, NestedLoopRunsInline) {
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(8 * 5);
    std::atomic<int> wrong_thread{0};
    pool.ParallelFor(8, [&](int64_t outer, int thread) {
      pool.ParallelFor(5, [&](int64_t inner, int inner_thread) {
        hits[static_cast<size_t>(outer * 5 + inner)].fetch_add(1);
        if (inner_thread != thread) wrong_thread = 1;
      });
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1) << threads << " threads";
    EXPECT_EQ(wrong_thread.load(), 0);
  }
}

// The ThreadSanitizer stage (label tsan) runs these: results are plain (non-atomic) writes, so a
// missing happens-before edge between the caller and the workers is a reported race.

// Workers that outwait kSpinIterations block on the condition variable (sleeping_workers_); each
// new loop must wake them and publish the loop (fn, n) and the caller's prior writes to them.
TEST(ThreadPoolTest, SleepingWorkersSeeEveryLoop) {
  ThreadPool pool(3);
  std::vector<int64_t> in(64), out(64);
  for (int round = 0; round < 20; ++round) {
    for (size_t i = 0; i < in.size(); ++i) in[i] = round * 1000 + static_cast<int64_t>(i);  // read by workers
    pool.ParallelFor(static_cast<int64_t>(in.size()),
                     [&](int64_t t, int) { out[static_cast<size_t>(t)] = 2 * in[static_cast<size_t>(t)]; });
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 2 * in[i]) << "round " << round;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // longer than the workers' spin
  }
}

// A slow task on a worker makes the caller stop spinning and block (caller_sleeping_); the last
// worker must wake it, and the caller must then see every task's writes.
TEST(ThreadPoolTest, BlockedCallerSeesSlowWorkersWrites) {
  ThreadPool pool(2);
  for (int round = 0; round < 10; ++round) {
    std::vector<int64_t> out(4, -1);
    pool.ParallelFor(4, [&](int64_t t, int thread) {
      std::this_thread::sleep_for(std::chrono::milliseconds(thread == 0 ? 1 : 3));
      out[static_cast<size_t>(t)] = t * t + round;
    });
    for (int64_t t = 0; t < 4; ++t) ASSERT_EQ(out[static_cast<size_t>(t)], t * t + round);
  }
}

// Like in-process ranks: several threads, each driving its own pool, many short loops at once
// (the lock-free hot path: spinning workers, no blocking).
TEST(ThreadPoolTest, OnePoolPerRankThread) {
  constexpr int kRanks = 4;
  std::vector<int64_t> sums(kRanks, 0);
  std::vector<std::thread> ranks;
  for (int r = 0; r < kRanks; ++r) {
    ranks.emplace_back([&, r] {
      ThreadPool pool(2);
      std::vector<int64_t> out(8);
      for (int round = 0; round < 300; ++round) {
        pool.ParallelFor(8, [&](int64_t t, int) { out[static_cast<size_t>(t)] = t + round; });
        for (int64_t v : out) sums[static_cast<size_t>(r)] += v;
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int64_t s : sums) EXPECT_EQ(s, 300 * 28 + 8 * (299 * 300 / 2));
}

// Destroying a pool whose workers sleep (and one whose workers still spin) joins them cleanly.
TEST(ThreadPoolTest, DestroyWithSleepingOrSpinningWorkers) {
  for (int wait_ms : {0, 5}) {
    ThreadPool pool(4);
    int64_t x = 0;
    pool.ParallelFor(4, [&](int64_t t, int) {
      if (t == 0) x = 1;
    });
    EXPECT_EQ(x, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  }
}

// pool.ParallelFor, or pool.ParallelForContiguous when `contiguous`.
void Loop(ThreadPool& pool, bool contiguous, int64_t n, const ThreadPool::TaskFn& fn) {
  if (contiguous) {
    pool.ParallelForContiguous(n, fn);
  } else {
    pool.ParallelFor(n, fn);
  }
}

// A task that throws (e.g. std::bad_alloc, which RunRanks turns into the rank's error) on the
// caller or on a worker ends the loop, under either schedule: the loop rethrows it only after every
// worker has left the loop, so no task still writes into the caller's frame (here `out`) once it
// unwinds; the pool stays usable.
TEST(ThreadPoolTest, AThrowingTaskEndsTheLoopAfterEveryWorkerLeft) {
  ThreadPool pool(3);
  for (bool contiguous : {false, true}) {
    SCOPED_TRACE(contiguous ? "ParallelForContiguous" : "ParallelFor");
    for (int round = 0; round < 12; ++round) {
      const int64_t bad = round % 3 == 0 ? 0 : 7 + round;  // task 0 is usually the caller's
      std::vector<int64_t> out(64, -1);
      EXPECT_THROW(Loop(pool, contiguous, 64,
                        [&](int64_t t, int) {
                          if (t == bad) throw std::runtime_error("task failed");
                          std::this_thread::sleep_for(std::chrono::microseconds(300));
                          out[static_cast<size_t>(t)] = t;
                        }),
                   std::runtime_error);
      EXPECT_EQ(out[static_cast<size_t>(bad)], -1);
    }
    std::vector<int64_t> out(64, -1);
    Loop(pool, contiguous, 64, [&](int64_t t, int) { out[static_cast<size_t>(t)] = t; });
    for (int64_t t = 0; t < 64; ++t) EXPECT_EQ(out[static_cast<size_t>(t)], t);
  }
}

// The contiguous schedule: every task once; thread t runs a prefix of its range [t n / T, (t + 1) n
// / T) in order, and the rest of each range (if any) went to other threads.
TEST(ThreadPoolContiguousTest, EveryTaskOnceEachThreadAPrefixOfItsRangeInOrder) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      SCOPED_TRACE(std::to_string(threads) + " threads, " + std::to_string(n) + " tasks");
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::vector<std::vector<int64_t>> ran(static_cast<size_t>(threads));  // each thread its own
      std::atomic<int> bad_thread{0};
      pool.ParallelForContiguous(n, [&](int64_t t, int thread) {
        if (thread < 0 || thread >= threads) {
          bad_thread = 1;
          return;
        }
        hits[static_cast<size_t>(t)].fetch_add(1);
        ran[static_cast<size_t>(thread)].push_back(t);
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      ASSERT_EQ(bad_thread.load(), 0);
      if (n == 1) continue;  // a single task runs inline on the caller
      for (int t = 0; t < threads; ++t) {
        const int64_t begin = t * n / threads, end = (t + 1) * n / threads;
        int64_t next = begin;
        for (int64_t task : ran[static_cast<size_t>(t)]) {
          if (task >= begin && task < end) {
            EXPECT_EQ(task, next++) << "thread " << t;
          }
        }
      }
    }
  }
}

// A thread that stalls (here the worker, in its first task) delays only that task: the caller runs
// its own range, then takes the stalled thread's from the end.
TEST(ThreadPoolContiguousTest, APeerTakesTheRangeOfAStalledThread) {
  ThreadPool pool(2);
  for (int round = 0; round < 2; ++round) {
    std::vector<std::atomic<int>> hits(200);
    std::atomic<int> worker_tasks{0};
    pool.ParallelForContiguous(200, [&](int64_t t, int thread) {
      hits[static_cast<size_t>(t)].fetch_add(1);
      if (thread == 1 && worker_tasks.fetch_add(1) == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
      }
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    EXPECT_LE(worker_tasks.load(), 1);
  }
}

// ParallelForStreams: every task once; a call gets 1 .. streams tasks, and the tasks each thread
// takes from the front of one of its own ranges come in order (the stream it reads).
TEST(ThreadPoolStreamsTest, EveryTaskOnceEachOwnRangeInOrder) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int streams : {1, 2, 4}) {
      for (int64_t n : {1, 5, 64, 1001}) {
        SCOPED_TRACE(testing::Message()
                     << threads << " threads, " << streams << " streams, " << n << " tasks");
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::vector<std::vector<int64_t>> ran(static_cast<size_t>(threads));
        std::atomic<int> bad_group{0};
        pool.ParallelForStreams(n, streams, [&](std::span<const int64_t> tasks, int thread) {
          if (tasks.empty() || tasks.size() > static_cast<size_t>(streams)) bad_group = 1;
          for (int64_t t : tasks) {
            hits[static_cast<size_t>(t)].fetch_add(1);
            ran[static_cast<size_t>(thread)].push_back(t);
          }
        });
        for (auto& h : hits) ASSERT_EQ(h.load(), 1);
        ASSERT_EQ(bad_group.load(), 0);
        const int64_t ranges = int64_t{threads} * streams;
        for (int t = 0; t < threads; ++t) {
          for (int s = 0; s < streams; ++s) {
            const int64_t r = int64_t{t} * streams + s, begin = r * n / ranges, end = (r + 1) * n / ranges;
            int64_t next = begin;
            for (int64_t task : ran[static_cast<size_t>(t)]) {
              if (task >= begin && task < end && task == next) ++next;
            }
            // The owner ran a prefix of its range in order (peers may have taken the rest from the end).
            for (int64_t task : ran[static_cast<size_t>(t)]) {
              if (task >= begin && task < end) {
                EXPECT_LT(task, next) << "range " << r << " out of order";
              }
            }
          }
        }
      }
    }
  }
}

// One call holds one task of each of the thread's ranges: the streams are read together.
TEST(ThreadPoolStreamsTest, ACallTakesTheNextTaskOfEachOwnRange) {
  ThreadPool pool(1);
  std::vector<std::vector<int64_t>> groups;
  pool.ParallelForStreams(
      10, 4, [&](std::span<const int64_t> tasks, int) { groups.emplace_back(tasks.begin(), tasks.end()); });
  // Ranges [0, 2), [2, 5), [5, 7), [7, 10).
  const std::vector<std::vector<int64_t>> expected = {{0, 2, 5, 7}, {1, 3, 6, 8}, {4, 9}};
  EXPECT_EQ(groups, expected);
}

TEST(ThreadPoolStreamsTest, APeerTakesTheRangesOfAStalledThread) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(400);
  std::atomic<int> worker_calls{0};
  pool.ParallelForStreams(400, 4, [&](std::span<const int64_t> tasks, int thread) {
    for (int64_t t : tasks) hits[static_cast<size_t>(t)].fetch_add(1);
    if (thread == 1 && worker_calls.fetch_add(1) == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  EXPECT_LE(worker_calls.load(), 1);
}

}  // namespace
}  // namespace moerun
