#include "comm/mpi_comm.h"

#include <time.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "core/fixed_point.h"

#ifdef MOERUN_WITH_MPI
#include <mpi.h>
#endif

namespace moerun {

bool StartedByMpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr ||
         std::getenv("PMI_RANK") != nullptr;
}

#ifdef MOERUN_WITH_MPI

bool MpiAvailable() { return true; }

namespace {

void SumI128(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const Fixed128*>(in);
  auto* b = static_cast<Fixed128*>(inout);
  for (int i = 0; i < *len; ++i) b[i] += a[i];
}

struct MpiTypes {
  MPI_Datatype i128 = MPI_DATATYPE_NULL;
  MPI_Op sum_i128 = MPI_OP_NULL;
};

MpiTypes& Types() {
  static MpiTypes t;
  return t;
}

std::vector<int> ToInts(std::span<const size_t> v) { return std::vector<int>(v.begin(), v.end()); }
std::vector<int> Displacements(const std::vector<int>& counts) {
  std::vector<int> d(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i) d[i] = d[i - 1] + counts[i - 1];
  return d;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::chrono::microseconds PollSleep(int polls) {
  if (polls <= 1000) return std::chrono::microseconds(20);
  const int doublings = std::min(4, (polls - 1000) / 100);  // 200, 400, 800, 1600 us ...
  return std::chrono::microseconds(std::min(2000, 200 << doublings));
}

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, std::string name, std::shared_ptr<CollectiveLog> log)
      : Communicator(std::move(name), std::move(log)), comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiComm() override {
    if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status AllReduce(void* data, size_t count, ReduceType type) override {
    const CollectiveTimer timer = Record("all_reduce", count * ReduceTypeSize(type));
    if (size_ == 1 || count == 0) return Status::Ok();
    MPI_Request req;  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): completed by Wait()
    if (type == ReduceType::kF32Sum) {
      MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_, &req);
    } else {
      MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), Types().i128, Types().sum_i128, comm_,
                     &req);
    }
    return Wait(&req, "all_reduce");
  }

  Status ReduceScatter(const void* send, void* recv, std::span<const size_t> counts,
                       ReduceType type) override {
    size_t total = 0;
    for (size_t c : counts) total += c;
    const CollectiveTimer timer = Record("reduce_scatter", total * ReduceTypeSize(type));
    std::vector<int> c = ToInts(counts);
    MPI_Request req;  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): completed by Wait()
    if (type == ReduceType::kF32Sum) {
      MPI_Ireduce_scatter(send, recv, c.data(), MPI_FLOAT, MPI_SUM, comm_, &req);
    } else {
      MPI_Ireduce_scatter(send, recv, c.data(), Types().i128, Types().sum_i128, comm_, &req);
    }
    return Wait(&req, "reduce_scatter");
  }

  Status AllGather(const void* send, void* recv, std::span<const size_t> recv_bytes) override {
    const CollectiveTimer timer = Record("all_gather", recv_bytes[static_cast<size_t>(rank_)]);
    std::vector<int> c = ToInts(recv_bytes);
    std::vector<int> d = Displacements(c);
    MPI_Request req;  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): completed by Wait()
    MPI_Iallgatherv(send, c[static_cast<size_t>(rank_)], MPI_BYTE, recv, c.data(), d.data(), MPI_BYTE, comm_,
                    &req);
    return Wait(&req, "all_gather");
  }

  Status AllToAll(const void* send, std::span<const size_t> send_bytes, void* recv,
                  std::span<const size_t> recv_bytes) override {
    size_t total = 0;
    for (size_t b : send_bytes) total += b;
    const CollectiveTimer timer = Record("all_to_all", total);
    std::vector<int> sc = ToInts(send_bytes), rc = ToInts(recv_bytes);
    std::vector<int> sd = Displacements(sc), rd = Displacements(rc);
    MPI_Request req;  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): completed by Wait()
    MPI_Ialltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, comm_, &req);
    return Wait(&req, "all_to_all");
  }

  Status Broadcast(void* data, size_t bytes, int root) override {
    const CollectiveTimer timer = Record("broadcast", rank_ == root ? bytes : 0);
    MPI_Request req;  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): completed by Wait()
    MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_, &req);
    return Wait(&req, "broadcast");
  }

  Status Barrier() override {
    MPI_Request req;  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): completed by Wait()
    MPI_Ibarrier(comm_, &req);
    return Wait(&req, "barrier");
  }

  StatusOr<std::unique_ptr<Communicator>> Split(int color, int key, std::string name) override {
    // MPI_Comm_split blocks without a deadline (MPI 3.1 has no non-blocking split): a polled
    // barrier first, so a missing peer fails here within the timeout instead.
    RETURN_IF_ERROR(Barrier());
    MPI_Comm sub;
    if (MPI_Comm_split(comm_, color, key, &sub) != MPI_SUCCESS) return Internal("MPI_Comm_split failed");
    auto c = std::make_unique<MpiComm>(sub, std::move(name), log_);
    c->set_timeout(timeout_);
    return std::unique_ptr<Communicator>(std::move(c));
  }

 private:
  // Polls the request, sleeping between polls, until it completes or the timeout passes.
  // (clang-tidy's MPI checker does not see this helper as the request's wait.)
  Status Wait(MPI_Request* req, const char* op) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    const double cpu0 = ThreadCpuSeconds();
    int done = 0;
    int polls = 0;
    for (;;) {
      MPI_Test(req, &done, MPI_STATUS_IGNORE);
      if (done) return Status::Ok();
      if (std::chrono::steady_clock::now() > deadline) {
        return Status(StatusCode::kIOError,
                      fmt::format("{} on group '{}' ({} ranks): no completion within {} ms{} (waiting used "
                                  "{:.3f} s of CPU)",
                                  op, name_, size_, timeout_.count(), InFlight(), ThreadCpuSeconds() - cpu0));
      }
      // Poll tightly for the first few microseconds (small messages), then yield the core: 20 us
      // sleeps for ~20 ms, then sleeps doubling up to 2 ms (a rank waiting seconds for a slow peer
      // wakes ~500 times a second, not 5000).
      if (++polls > 64) std::this_thread::sleep_for(PollSleep(polls));
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

// MPI_Init waits for every rank of the job, without a deadline: a peer that never starts (stopped,
// stuck before main) would keep this rank in it forever. A watchdog thread ends the process with
// a message once `deadline` passes; mpirun then takes the whole job down.
class InitWatchdog {
 public:
  explicit InitWatchdog(std::chrono::milliseconds deadline)
      : thread_([this, deadline] {
          std::unique_lock<std::mutex> lock(mu_);
          if (cv_.wait_for(lock, deadline, [this] { return done_; })) return;
          std::fprintf(
              stderr,
              "moerun: error: MPI_Init did not complete within %lld ms (a peer rank did not start or "
              "is stopped; --collective-timeout)\n",
              static_cast<long long>(deadline.count()));
          std::fflush(stderr);
          std::_Exit(kExitInitTimeout);
        }) {}
  ~InitWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  InitWatchdog(const InitWatchdog&) = delete;
  InitWatchdog& operator=(const InitWatchdog&) = delete;

 private:
  static constexpr int kExitInitTimeout = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

StatusOr<std::unique_ptr<Communicator>> MpiWorld(int* argc, char*** argv,
                                                 std::chrono::milliseconds init_deadline) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    int rc = 0;
    {
      InitWatchdog watchdog(init_deadline);
      rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    }
    if (rc != MPI_SUCCESS) return Internal("MPI_Init_thread failed");
    MPI_Type_contiguous(16, MPI_BYTE, &Types().i128);
    MPI_Type_commit(&Types().i128);
    MPI_Op_create(&SumI128, /*commute=*/1, &Types().sum_i128);
    std::atexit([] {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    });
  }
  return std::unique_ptr<Communicator>(
      std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", std::make_shared<CollectiveLog>()));
}

void MpiAbort(int code) {
  // MPI_Abort asks mpirun (through PMIx, over TCP) to kill the job, and waits for it. A rank whose
  // connection to mpirun runs over a link that has gone down (a rank on another host, or in another
  // network namespace: tests/reliability/multihost_test.sh) never gets the request through, and
  // MPI_Abort then blocks for as long as TCP retransmits (many minutes). Bound it: past
  // kAbortGrace the process exits non-zero on its own, which mpirun (the parent of every local
  // process) sees, and then it takes the rest of the job down.
  std::thread([code] {
    constexpr std::chrono::seconds kAbortGrace(3);
    std::this_thread::sleep_for(kAbortGrace);
    std::fprintf(stderr,
                 "moerun: error: MPI_Abort did not return within %lld s (mpirun unreachable); exiting with "
                 "code %d\n",
                 static_cast<long long>(kAbortGrace.count()), code);
    std::fflush(stderr);
    std::_Exit(code);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#else  // !MOERUN_WITH_MPI

bool MpiAvailable() { return false; }

StatusOr<std::unique_ptr<Communicator>> MpiWorld(int*, char***, std::chrono::milliseconds) {
  return Unimplemented("this moerun was built without MPI (install libopenmpi-dev and rebuild)");
}

void MpiAbort(int code) { std::_Exit(code); }

#endif

}  // namespace moerun
