#include "comm/mpi_comm.h"

#include <cstdlib>
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
    int done = 0;
    int polls = 0;
    for (;;) {
      MPI_Test(req, &done, MPI_STATUS_IGNORE);
      if (done) return Status::Ok();
      if (std::chrono::steady_clock::now() > deadline) {
        return Status(StatusCode::kIOError,
                      fmt::format("{} on group '{}' ({} ranks): no completion within {} ms", op, name_, size_,
                                  timeout_.count()));
      }
      // Poll tightly for the first few microseconds (small messages), then yield the core.
      if (++polls > 64) std::this_thread::sleep_for(std::chrono::microseconds(polls > 1000 ? 200 : 20));
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

StatusOr<std::unique_ptr<Communicator>> MpiWorld(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return Internal("MPI_Init_thread failed");
    }
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
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#else  // !MOERUN_WITH_MPI

bool MpiAvailable() { return false; }

StatusOr<std::unique_ptr<Communicator>> MpiWorld(int*, char***) {
  return Unimplemented("this moerun was built without MPI (install libopenmpi-dev and rebuild)");
}

void MpiAbort(int code) { std::_Exit(code); }

#endif

}  // namespace moerun
