#include "core/signals.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <string>
#include <thread>

namespace moerun {
namespace {

std::string Line(int sig) {
  char buf[512];
  return std::string(buf, FormatSignalLine(sig, buf, sizeof(buf)));
}

TEST(SignalLine, NamesTheCollectiveInFlightAndTheOneBefore) {
  ResetCollectivePublication();
  EXPECT_EQ(Line(SIGINT), "moerun: SIGINT received\n");
  PublishCollectiveBegin(1, "all_reduce", "tp", 57, "layer 3 o_proj output");
  EXPECT_EQ(Line(SIGTERM),
            "moerun: rank 1: SIGTERM received during all_reduce on group 'tp' [collective #57 of this rank: "
            "layer 3 "
            "o_proj output]\n");
  PublishCollectiveEnd();
  EXPECT_EQ(
      Line(SIGTERM),
      "moerun: rank 1: SIGTERM received while computing after collective #57 (layer 3 o_proj output)\n");
  PublishCollectiveBegin(0, "broadcast", "world", 2, "");
  EXPECT_EQ(
      Line(SIGINT),
      "moerun: rank 0: SIGINT received during broadcast on group 'world' [collective #2 of this rank]\n");
  ResetCollectivePublication();
}

TEST(SignalLine, LongLabelsAreCutAndTheBufferIsNeverOverrun) {
  ResetCollectivePublication();
  const std::string label(1000, 'x');
  PublishCollectiveBegin(3, "all_to_all", std::string(200, 'g'), 12345678901234ull, label);
  char buf[64];
  std::memset(buf, '?', sizeof(buf));
  const size_t n = FormatSignalLine(SIGTERM, buf, 40);
  EXPECT_EQ(n, 40u);
  EXPECT_EQ(buf[39], '\n');
  EXPECT_EQ(std::string(buf, 39),
            std::string("moerun: rank 3: SIGTERM received during all_to_all on group 'ggg").substr(0, 39));
  EXPECT_EQ(buf[40], '?');
  const std::string full = Line(SIGTERM);
  EXPECT_LT(full.size(), 512u);
  EXPECT_NE(full.find("[collective #12345678901234 of this rank: xxx"), std::string::npos);
  ResetCollectivePublication();
}

// A reader racing the publisher sees a whole publication or falls back to the sequence number.
TEST(SignalLine, ConcurrentReadsSeeWholeOrSequenceOnly) {
  ResetCollectivePublication();
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint64_t s = 1; !stop.load(); ++s) {
      PublishCollectiveBegin(0, s % 2 ? "all_reduce" : "all_gather", "tp", s, s % 2 ? "odd" : "even");
      PublishCollectiveEnd();
    }
  });
  for (int i = 0; i < 20000; ++i) {
    const std::string l = Line(SIGTERM);
    const bool whole_odd =
        l.find("all_reduce") != std::string::npos ? l.find("odd") != std::string::npos : true;
    const bool whole_even =
        l.find("all_gather") != std::string::npos ? l.find("even") != std::string::npos : true;
    EXPECT_TRUE(whole_odd && whole_even) << l;
  }
  stop.store(true);
  writer.join();
  ResetCollectivePublication();
}

// The installed handler prints the line and then ends the process by the signal's default action.
TEST(SignalLine, HandlerPrintsAndEndsTheProcessBySignal) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    InstallSignalReport();
    PublishCollectiveBegin(2, "barrier", "dp", 9, "layer 0");
    raise(SIGTERM);
    _exit(0);  // not reached
  }
  close(fds[1]);
  std::string out;
  char buf[256];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_EQ(out,
            "moerun: rank 2: SIGTERM received during barrier on group 'dp' [collective #9 of this rank: "
            "layer 0]\n");
}

// Under an InterruptScope the first signal is a flag; the handler line comes with the second.
TEST(SignalLine, InterruptScopeTurnsTheFirstSignalIntoAFlag) {
  const InterruptScope scope;
  EXPECT_EQ(InterruptScope::Received(), 0);
  raise(SIGINT);
  EXPECT_EQ(InterruptScope::Received(), SIGINT);
}

}  // namespace
}  // namespace moerun
