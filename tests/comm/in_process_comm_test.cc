// In-process communicator: every collective against hand-computed results, sub-groups, and a
// missing peer turning into an error instead of a hang.
#include "comm/in_process_comm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <thread>

#include "core/fixed_point.h"

namespace moerun {
namespace {

class CommTest : public ::testing::TestWithParam<int> {};

TEST_P(CommTest, AllReduceSumsInRankOrder) {
  const int n = GetParam();
  const Status s = RunRanks(n, [&](Communicator& c) -> Status {
    std::vector<float> v(13);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(c.rank() * 100 + static_cast<int>(i));
    RETURN_IF_ERROR(c.AllReduce(v.data(), v.size(), ReduceType::kF32Sum));
    for (size_t i = 0; i < v.size(); ++i) {
      const float want = static_cast<float>(100 * n * (n - 1) / 2 + n * static_cast<int>(i));
      if (v[i] != want) return Internal("rank {} element {}: {} != {}", c.rank(), i, v[i], want);
    }
    std::vector<Fixed128> f(5, ToFixed(0.25f * static_cast<float>(c.rank() + 1)));
    RETURN_IF_ERROR(c.AllReduce(f.data(), f.size(), ReduceType::kI128Sum));
    if (FromFixed(f[4]) != 0.25f * static_cast<float>(n * (n + 1) / 2)) return Internal("i128 sum wrong");
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_P(CommTest, GatherScatterAllToAll) {
  const int n = GetParam();
  const Status s = RunRanks(n, [&](Communicator& c) -> Status {
    const int r = c.rank();
    // all_gather with uneven sizes: rank q sends q + 1 ints of value q.
    std::vector<int32_t> mine(static_cast<size_t>(r + 1), r);
    std::vector<size_t> bytes;
    for (int q = 0; q < n; ++q) bytes.push_back(static_cast<size_t>(q + 1) * sizeof(int32_t));
    std::vector<int32_t> all(static_cast<size_t>(n * (n + 1) / 2));
    RETURN_IF_ERROR(c.AllGather(mine.data(), all.data(), bytes));
    size_t pos = 0;
    for (int q = 0; q < n; ++q)
      for (int i = 0; i <= q; ++i)
        if (all[pos++] != q) return Internal("all_gather wrong at {}", pos - 1);
    // reduce_scatter: every rank contributes 1..total; rank q gets counts[q] = q + 1 elements.
    std::vector<size_t> counts;
    for (int q = 0; q < n; ++q) counts.push_back(static_cast<size_t>(q + 1));
    std::vector<float> send(all.size());
    std::iota(send.begin(), send.end(), 1.0f);
    std::vector<float> recv(static_cast<size_t>(r + 1));
    RETURN_IF_ERROR(c.ReduceScatter(send.data(), recv.data(), counts, ReduceType::kF32Sum));
    const size_t offset = static_cast<size_t>(r * (r + 1) / 2);
    for (size_t i = 0; i < recv.size(); ++i)
      if (recv[i] != static_cast<float>(n) * send[offset + i]) return Internal("reduce_scatter wrong");
    // all_to_all: rank r sends (r, q) to rank q.
    std::vector<int32_t> out(static_cast<size_t>(2 * n)), in(static_cast<size_t>(2 * n));
    for (int q = 0; q < n; ++q) {
      out[2 * q] = r;
      out[2 * q + 1] = q;
    }
    std::vector<size_t> pair(static_cast<size_t>(n), 2 * sizeof(int32_t));
    RETURN_IF_ERROR(c.AllToAll(out.data(), pair, in.data(), pair));
    for (int q = 0; q < n; ++q)
      if (in[2 * q] != q || in[2 * q + 1] != r) return Internal("all_to_all wrong from {}", q);
    int32_t root_value = r == n - 1 ? 42 : 0;
    RETURN_IF_ERROR(c.Broadcast(&root_value, sizeof root_value, n - 1));
    if (root_value != 42) return Internal("broadcast wrong");
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_P(CommTest, SplitFormsSubGroups) {
  const int n = GetParam();
  const Status s = RunRanks(n, [&](Communicator& c) -> Status {
    // Two "TP" groups of consecutive ranks (when n is even).
    const int tp = n % 2 == 0 ? 2 : 1;
    ASSIGN_OR_RETURN(auto sub, c.Split(c.rank() / tp, c.rank() % tp, "tp"));
    if (sub->size() != tp || sub->rank() != c.rank() % tp) return Internal("bad split rank/size");
    float v = static_cast<float>(c.rank());
    RETURN_IF_ERROR(sub->AllReduce(&v, 1, ReduceType::kF32Sum));
    const int base = (c.rank() / tp) * tp;
    float want = 0;
    for (int q = base; q < base + tp; ++q) want += static_cast<float>(q);
    if (v != want) return Internal("sub-group sum {} != {}", v, want);
    // Collectives are logged with the group name.
    const auto records = c.log()->Take();
    if (tp > 1 && (records.empty() || records.back().group != "tp")) return Internal("not logged as tp");
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommTest, ::testing::Values(1, 2, 3, 4, 8));

TEST(CommTimeoutTest, MissingPeerIsAnErrorNotAHang) {
  auto comms = InProcessWorld::Create(2);
  comms[0]->set_timeout(std::chrono::milliseconds(100));
  float v = 1.0f;
  const Status s = comms[0]->AllReduce(&v, 1, ReduceType::kF32Sum);  // rank 1 never comes
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_NE(s.message().find("all_reduce on group 'world'"), std::string::npos) << s.message();
}

// A rank that gives up at a collective's last barrier (its deadline) must not return while a peer
// still copies from its buffer: rank 1 reads 32 MB from rank 0, which reads nothing, times out
// after 1 ms and at once overwrites its send buffer. Rank 1 must receive only the original bytes
// (and, under ThreadSanitizer, the overwrite must not race with its memcpy).
TEST(CommTimeoutTest, ARankThatGivesUpWaitsForPeersReadingItsBuffer) {
  auto comms = InProcessWorld::Create(2);
  comms[0]->set_timeout(std::chrono::milliseconds(1));
  const size_t big = size_t{32} << 20;
  std::vector<char> recv(big, 0);
  Status s1;
  std::thread rank1([&] {
    const size_t send_bytes[2] = {0, 0}, recv_bytes[2] = {big, 0};
    s1 = comms[1]->AllToAll(nullptr, send_bytes, recv.data(), recv_bytes);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // rank 1 waits at the first barrier
  std::vector<char> send(big, 'x');
  const size_t send_bytes[2] = {0, big}, recv_bytes[2] = {0, 0};
  const Status s0 = comms[0]->AllToAll(send.data(), send_bytes, nullptr, recv_bytes);
  std::fill(send.begin(), send.end(), 'y');  // the caller reuses its buffer after the error
  rank1.join();
  if (!s0.ok()) {
    EXPECT_NE(s0.message().find("did not arrive within 1 ms"), std::string::npos) << s0.message();
    EXPECT_FALSE(s1.ok());
  }
  EXPECT_EQ(std::count(recv.begin(), recv.end(), 'x'), static_cast<std::ptrdiff_t>(big));
}

TEST(FixedPointTest, ExactAndOrderIndependent) {
  const float a = 1e-3f, b = 3.0f, c = -2.9990001f;
  const Fixed128 s1 = ToFixed(a) + ToFixed(b) + ToFixed(c);
  const Fixed128 s2 = ToFixed(c) + ToFixed(a) + ToFixed(b);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(FromFixed(ToFixed(0.1f)), 0.1f);
  EXPECT_EQ(FromFixed(ToFixed(-123.456f)), -123.456f);
  EXPECT_EQ(ToFixed(0.0f), 0);
}

}  // namespace
}  // namespace moerun
