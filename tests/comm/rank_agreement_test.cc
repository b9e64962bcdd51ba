// Rank agreement (comm/rank_agreement.h) on in-process ranks: every rank reaches the same verdict,
// naming the field, the ranks and both values; and in-process failure propagation
// (comm/in_process_comm.h): a failed rank stops its waiting peers at once, not at their deadline.
#include "comm/rank_agreement.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>

#include "comm/in_process_comm.h"

namespace moerun {
namespace {

RankFingerprint Base() {
  RankFingerprint fp;
  fp.Add("command", "generate");
  fp.Add("-n", "8");
  fp.Add("--tp", "2");
  return fp;
}

// Runs CheckRanksAgree on n ranks, rank r with fingerprint make(r); returns every rank's status.
std::vector<Status> AgreeOnRanks(int n, const std::function<RankFingerprint(int)>& make) {
  std::vector<Status> got(static_cast<size_t>(n));
  (void)RunRanks(n, [&](Communicator& world) -> Status {
    world.set_timeout(std::chrono::seconds(30));
    got[static_cast<size_t>(world.rank())] = CheckRanksAgree(world, make(world.rank()));
    return Status::Ok();
  });
  return got;
}

TEST(RankAgreement, EqualFingerprintsAgree) {
  for (const Status& s : AgreeOnRanks(4, [](int) { return Base(); })) EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(RankAgreement, ADifferentValueIsNamedWithBothValuesOnEveryRank) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Status> got = AgreeOnRanks(3, [](int r) {
    RankFingerprint fp = Base();
    if (r == 2) fp.Add("-n", "9");
    return fp;
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  for (const Status& s : got) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(
        s.message(),
        "ranks disagree on '-n': rank 0 has '8', rank 2 has '9' (1 of 3 ranks differ from rank 0; every "
        "rank must be started with the same flags, model files and inputs)");
  }
}

TEST(RankAgreement, TheFirstFieldInRankZerosOrderIsReported) {
  const std::vector<Status> got = AgreeOnRanks(2, [](int r) {
    RankFingerprint fp = Base();
    if (r == 1) {
      fp.Add("--tp", "1");
      fp.Add("command", "eval");
    }
    return fp;
  });
  for (const Status& s : got)
    EXPECT_NE(s.message().find("ranks disagree on 'command': rank 0 has 'generate', rank 1 has 'eval'"),
              std::string::npos)
        << s.message();
}

TEST(RankAgreement, AFieldOnlyOneRankHasIsNamed) {
  const std::vector<Status> got = AgreeOnRanks(2, [](int r) {
    RankFingerprint fp = Base();
    if (r == 1) fp.Add("model file extra.safetensors", "size 10 bytes");
    return fp;
  });
  for (const Status& s : got)
    EXPECT_NE(s.message().find("ranks disagree on 'model file extra.safetensors': rank 0 has no such field, "
                               "rank 1 has 'size 10 bytes'"),
              std::string::npos)
        << s.message();
}

TEST(RankAgreement, SerializeRoundTripsAndParseRejectsCutBytes) {
  RankFingerprint fp = Base();
  fp.Add("prompt", std::string("a\0b", 3));
  const std::string bytes = fp.Serialize();
  StatusOr<RankFingerprint> back = RankFingerprint::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->fields().size(), 4u);
  EXPECT_EQ(*back->Find("prompt"), std::string("a\0b", 3));
  EXPECT_EQ(RankFingerprint::Parse(bytes.substr(0, bytes.size() - 1)).status().code(),
            StatusCode::kCorruption);
  EXPECT_EQ(RankFingerprint::Parse(bytes + "x").status().code(), StatusCode::kCorruption);
}

TEST(RankAgreement, LongValuesAreShownAsDigests) {
  EXPECT_EQ(ShownOrDigest("1,2,3"), "1,2,3");
  const std::string long_text(200, 'x');
  EXPECT_EQ(ShownOrDigest(long_text).rfind("200 bytes, fnv1a64 ", 0), 0u) << ShownOrDigest(long_text);
  EXPECT_NE(ShownOrDigest(long_text), ShownOrDigest(long_text + "y"));
  EXPECT_EQ(DigestOf(""), "fnv1a64 cbf29ce484222325");
}

TEST(InProcessFailure, AFailedRankStopsItsWaitingPeersAtOnce) {
  const auto t0 = std::chrono::steady_clock::now();
  std::mutex mu;
  std::vector<std::string> peer_errors;
  const Status s = RunRanks(3, [&](Communicator& world) -> Status {
    world.set_timeout(std::chrono::seconds(60));
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, world.Split(world.rank() % 2, world.rank(), "tp"));
    if (world.rank() == 2) return InvalidArgument("layer 1 output: nan at position 3");
    float v = 1;
    const Status peer = world.rank() == 0 ? sub->AllReduce(&v, 1, ReduceType::kF32Sum) : world.Barrier();
    std::lock_guard<std::mutex> lock(mu);
    peer_errors.push_back(peer.message());
    return peer;
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(s.message(), "layer 1 output: nan at position 3");  // the cause, not a peer's report
  ASSERT_EQ(peer_errors.size(), 2u);
  for (const std::string& m : peer_errors)
    EXPECT_NE(m.find("world rank 2 failed: layer 1 output: nan at position 3"), std::string::npos) << m;
}

}  // namespace
}  // namespace moerun
