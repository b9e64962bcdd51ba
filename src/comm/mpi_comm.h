// MpiCommunicator: one rank per process under mpirun (Open MPI), behind the Communicator API.
//
// MpiRuntime initialises MPI once (MPI_THREAD_FUNNELED) and finalises it at exit; StartedByMpirun()
// tells whether this process was launched by mpirun (OMPI_COMM_WORLD_SIZE / PMIX_RANK set).
// Collectives are non-blocking MPI calls completed by polling with short sleeps until the
// communicator's timeout, so a dead peer produces an error (then MPI_Abort by the caller) instead
// of a hang, and no core is burnt spinning. 128-bit integer sums use a user-defined MPI_Op
// (commutative: integer addition is exact).
// Split() runs a polled barrier before the (blocking) MPI_Comm_split, so it also fails within the
// timeout when a peer is missing.
// Thread safety: MPI calls only from the thread that initialised MPI.
#pragma once

#include <chrono>
#include <memory>

#include "comm/communicator.h"

namespace moerun {

bool StartedByMpirun();
bool MpiAvailable();  // compiled with MPI support

// Initialises MPI (idempotent) and returns the world communicator ("world"). MPI_Init itself has no
// deadline (it waits for every rank of the job): past `init_deadline` the process prints the reason
// and exits non-zero, so a peer that never starts cannot keep this rank waiting forever.
StatusOr<std::unique_ptr<Communicator>> MpiWorld(
    int* argc, char*** argv, std::chrono::milliseconds init_deadline = std::chrono::seconds(120));
// Aborts every rank of the job (after printing the error on this rank). Bounded: when mpirun cannot
// be reached (a cut link), the process exits with `code` after a few seconds instead.
[[noreturn]] void MpiAbort(int code);

}  // namespace moerun
