// The parallel runner on in-process ranks against the one-rank output, over the cross product of
// layouts x dispatch x shared experts on/off x shared sharded/replicated x world 1, 2, 4, 8:
// bitwise in deterministic mode, within tolerance in fast mode; collective counts per layout;
// wrong declarations refused; every dispatched row probed to arrive where its route says.
#include "moe/parallel_moe.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "../testing/process_temp_dir.h"
#include "comm/in_process_comm.h"
#include "moe/synthetic_block.h"
#include "moe/testing/dispatch_probe.h"
#include "moe/testing/fault_injection.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  MoeConfig config;
  std::unique_ptr<Checkpoint> ckpt;
  Tensor x;  // [kTokens, H]
};

constexpr int64_t kTokens = 37;  // odd on purpose: uneven DP/SP splits

// f32 weights keep fast-mode tolerances tight; one fixture per preset (and widths), written once.
// hidden / intermediate > 0 replace the small preset's 64 / 32 (the shared width follows).
const Fixture& GetFixture(const std::string& preset, int64_t hidden = 0, int64_t intermediate = 0) {
  static std::map<std::string, Fixture> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const std::string key = fmt::format("{}_h{}_i{}", preset, hidden, intermediate);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  Fixture f;
  nlohmann::json j = nlohmann::json::parse(PresetConfigJson(preset, true).value());
  if (hidden > 0) j["hidden_size"] = hidden;
  if (intermediate > 0) j["moe_intermediate_size"] = intermediate;
  f.config = MoeConfig::FromJson(j.dump(), key).value();
  const fs::path& dir = testing_support::ProcessTempDir("moerun_parallel_test");
  const std::string path = (dir / (key + ".safetensors")).string();
  EXPECT_TRUE(WriteSafetensors(path, MakeSyntheticMoeTensors(f.config, 3, DType::kF32).value()).ok());
  f.ckpt = Checkpoint::Open(path).value();
  f.x = MakeSyntheticInput(kTokens, f.config.hidden_size, 9, DType::kF32).value();
  return cache.emplace(key, std::move(f)).first->second;
}

struct RunResult {
  std::vector<float> y;                                  // [kTokens, H], assembled from the writer ranks
  std::map<int, std::vector<CollectiveRecord>> records;  // per world rank
};

StatusOr<RunResult> RunLayout(const Fixture& f, const ParallelOptions& o, bool reduce_again = false,
                              std::optional<WeightFormat> format = std::nullopt) {
  RunResult result;
  result.y.assign(static_cast<size_t>(kTokens * f.config.hidden_size), std::nanf(""));
  std::mutex mu;
  const Status s = RunRanks(o.world(), [&](Communicator& world) -> Status {
    ThreadPool pool(1);
    ASSIGN_OR_RETURN(auto moe, ParallelMoe::Create(f.config, *f.ckpt, "", o, world, format, &pool,
                                                   KernelPolicy{.precision = ActivationPrecision::kF32}));
    if (reduce_again) moe->AddHook(MakeReduceOutputAgain());
    const auto [begin, end] = moe->TokenRange(kTokens);
    (void)world.log()->Take();
    ASSIGN_OR_RETURN(Tensor y, moe->Forward(f.x.Rows(begin, end), 0, nullptr));
    std::lock_guard<std::mutex> lock(mu);
    result.records[world.rank()] = world.log()->Take();
    if (moe->WritesOutput()) {
      std::copy(y.data<float>(), y.data<float>() + y.numel(),
                result.y.begin() + begin * f.config.hidden_size);
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return result;
}

ParallelOptions Layout(int tp, int dp, bool ep, bool sp, DispatchKind d = DispatchKind::kAllGather) {
  ParallelOptions o;
  o.tp = tp;
  o.dp = dp;
  o.ep = ep;
  o.sp = sp;
  o.dispatch = d;
  return o;
}

std::vector<ParallelOptions> AllLayouts() {
  std::vector<ParallelOptions> out;
  for (int world : {1, 2, 4, 8}) {
    for (int tp = 1; tp <= world; tp *= 2) {
      const int dp = world / tp;
      for (bool ep : {false, true}) {
        for (bool sp : {false, true}) {
          if (sp && (tp < 2 || !ep)) continue;
          for (DispatchKind d : {DispatchKind::kAllGather, DispatchKind::kAllToAll}) {
            if (d == DispatchKind::kAllToAll && !ep) continue;
            if (d == DispatchKind::kAllToAll && dp == 1 && !sp) continue;  // no dispatch happens
            for (bool replicated : {false, true}) {
              if (replicated && (tp < 2 || sp)) continue;
              ParallelOptions o = Layout(tp, dp, ep, sp, d);
              o.shared_replicated = replicated;
              out.push_back(o);
            }
          }
        }
      }
    }
  }
  return out;
}

struct Case {
  std::string preset;  // v2-lite: shared experts; qwen3: none
  ParallelOptions layout;
};

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* preset : {"v2-lite", "qwen3"})
    for (const ParallelOptions& o : AllLayouts()) cases.push_back({preset, o});
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string s = info.param.preset + "_" + info.param.layout.ToString();
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.preset << " " << c.layout.ToString(); }

class ParallelMoeTest : public ::testing::TestWithParam<Case> {};

TEST_P(ParallelMoeTest, FastModeMatchesOneRank) {
  const Case& c = GetParam();
  const Fixture& f = GetFixture(c.preset);
  auto one = ParallelMoe::CreateLocal(f.config, *f.ckpt, "", std::nullopt, nullptr,
                                      KernelPolicy{.precision = ActivationPrecision::kF32});
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  const Tensor want = (*one)->Forward(f.x, 0, nullptr).value();
  auto got = RunLayout(f, c.layout);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  double max_err = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    max_err = std::max(max_err, static_cast<double>(std::fabs(got->y[i] - want.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want.data<float>()[i])));
  }
  EXPECT_LE(max_err, 1e-5 * scale + 1e-7) << "max err " << max_err << " scale " << scale;

  // Collectives on rank 0 (fast mode).
  const std::vector<CollectiveRecord>& rec = got->records[0];
  int all_reduce = 0;
  for (const auto& r : rec) all_reduce += r.op == "all_reduce";
  EXPECT_LE(all_reduce, 1) << "at most one all_reduce per layer";
  if (c.layout.sp) {
    EXPECT_EQ(all_reduce, 0) << "SP: the layer must not all-reduce";
  }
  if (c.layout.dp == 1 && !c.layout.sp && c.layout.tp > 1) {
    ASSERT_EQ(rec.size(), 1u) << "TP: exactly one collective";
    EXPECT_EQ(rec[0].op, "all_reduce");
    EXPECT_EQ(rec[0].group, "tp");
  }
  if (c.layout.world() == 1) {
    EXPECT_TRUE(rec.empty());
  }
}

TEST_P(ParallelMoeTest, DeterministicModeIsBitwiseIdenticalToOneRank) {
  const Case& c = GetParam();
  const Fixture& f = GetFixture(c.preset);
  ParallelOptions one;
  one.deterministic = true;
  ParallelOptions layout = c.layout;
  layout.deterministic = true;
  auto want = RunLayout(f, one);
  auto got = RunLayout(f, layout);
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  for (size_t i = 0; i < want->y.size(); ++i) {
    ASSERT_EQ(std::memcmp(&want->y[i], &got->y[i], sizeof(float)), 0)
        << "element " << i << ": " << want->y[i] << " vs " << got->y[i];
  }
}

// Deterministic mode sums the same expert outputs exactly: on one rank it must agree with fast
// mode (f32 weights, f32 activations on both) to f32 rounding, shared experts included.
TEST(ParallelMoeDeterministic, MatchesFastModeOnOneRank) {
  for (const char* preset : {"v2-lite", "qwen3"}) {
    const Fixture& f = GetFixture(preset);
    ParallelOptions det;
    det.deterministic = true;
    auto fast = RunLayout(f, ParallelOptions{});
    auto exact = RunLayout(f, det);
    ASSERT_TRUE(fast.ok()) << fast.status().ToString();
    ASSERT_TRUE(exact.ok()) << exact.status().ToString();
    double max_abs = 0;
    for (float v : fast->y) max_abs = std::max(max_abs, static_cast<double>(std::fabs(v)));
    ASSERT_GT(max_abs, 0.0);
    for (size_t i = 0; i < fast->y.size(); ++i) {
      ASSERT_NEAR(exact->y[i], fast->y[i], 1e-5 * max_abs) << preset << " element " << i;
    }
  }
}

// Block formats: deterministic mode cuts K into the most blocks that are whole format blocks (the
// same count on every layout), so quantised experts are bitwise identical across layouts too; a
// layout whose ranks do not divide that count is refused, naming it.
TEST(ParallelMoeDeterministic, QuantisedExpertsAreBitwiseIdenticalAcrossLayouts) {
  struct FormatCase {
    WeightFormat format;
    int64_t hidden, intermediate, routed_blocks;  // routed_blocks: the count layouts must divide
  };
  // q8_0 / q4_0 / q5_0 / q5_1 at I = 128: 8 blocks of 16 columns are not whole 32-blocks, 4 of 32 are.
  // q4_k / q5_k / q6_k at I = 512: 2 blocks of 256 columns (shared width 1024: 4 blocks).
  for (const FormatCase& fc :
       {FormatCase{WeightFormat::kQ8_0, 64, 128, 4}, FormatCase{WeightFormat::kQ4_0, 64, 128, 4},
        FormatCase{WeightFormat::kQ5_0, 64, 128, 4}, FormatCase{WeightFormat::kQ5_1, 64, 128, 4},
        FormatCase{WeightFormat::kQ4_K, 256, 512, 2}, FormatCase{WeightFormat::kQ5_K, 256, 512, 2},
        FormatCase{WeightFormat::kQ6_K, 256, 512, 2}}) {
    SCOPED_TRACE(WeightFormatName(fc.format));
    const Fixture& f = GetFixture("v2-lite", fc.hidden, fc.intermediate);
    ParallelOptions one;
    one.deterministic = true;
    auto want = RunLayout(f, one, false, fc.format);
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    std::vector<ParallelOptions> layouts = {Layout(2, 1, false, false), Layout(1, 2, false, false),
                                            Layout(2, 2, true, true, DispatchKind::kAllToAll),
                                            Layout(4, 2, true, false), Layout(2, 1, false, false)};
    layouts.back().shared_replicated = true;
    if (fc.routed_blocks >= 4) layouts.push_back(Layout(2, 2, false, false));
    for (ParallelOptions o : layouts) {
      o.deterministic = true;
      auto got = RunLayout(f, o, false, fc.format);
      ASSERT_TRUE(got.ok()) << o.ToString() << ": " << got.status().ToString();
      ASSERT_EQ(std::memcmp(want->y.data(), got->y.data(), want->y.size() * sizeof(float)), 0)
          << o.ToString();
    }
    ParallelOptions sliced = Layout(static_cast<int>(fc.routed_blocks) * 2, 1, false, false);
    sliced.deterministic = true;
    const Status refused = RunLayout(f, sliced, false, fc.format).status();
    ASSERT_FALSE(refused.ok()) << sliced.ToString();
    EXPECT_NE(refused.message().find(fmt::format("divide the {} K-blocks of the {}-wide down projections",
                                                 fc.routed_blocks, fc.intermediate)),
              std::string::npos)
        << refused.message();
  }
}

TEST(ParallelMoeDeterministic, BlockCountIsTheLargestWholeFormatBlockCount) {
  EXPECT_EQ(DeterministicBlocks(1408, 1), 8);    // V2-Lite bf16: 176 columns
  EXPECT_EQ(DeterministicBlocks(1408, 32), 4);   // q8_0 / q4_0: 352 = 11 x 32
  EXPECT_EQ(DeterministicBlocks(2816, 32), 8);   // V2-Lite shared: 352
  EXPECT_EQ(DeterministicBlocks(2048, 256), 8);  // V3 q4_k: 256
  EXPECT_EQ(DeterministicBlocks(768, 256), 1);   // Qwen3-30B-A3B q4_k: 3 x 256
  EXPECT_EQ(DeterministicBlocks(1408, 256), 0);  // no whole q4_k blocks at all
  EXPECT_EQ(DeterministicBlocks(21, 1), 0);      // odd
}

INSTANTIATE_TEST_SUITE_P(Layouts, ParallelMoeTest, ::testing::ValuesIn(AllCases()), CaseName);

TEST(ParallelMoeRefusals, InvalidLayoutsNameTheFlag) {
  const Fixture& f = GetFixture("v2-lite");  // 16 experts, I = 32, S = 64
  auto expect = [&](const ParallelOptions& o, int world, const std::string& needle) {
    const Status s = o.Validate(MoeLayoutDims(f.config), world);
    EXPECT_FALSE(s.ok()) << o.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  expect(Layout(3, 1, true, false), 3, "--ep: 3 ranks do not divide 16 routed experts");
  expect(Layout(1, 2, true, true), 2, "--sp needs --tp > 1");
  expect(Layout(2, 1, false, true), 2, "--sp needs --ep");
  expect(Layout(2, 2, false, false, DispatchKind::kAllToAll), 4, "--dispatch alltoall needs --ep");
  expect(Layout(2, 2, true, false), 3, "world size 3 != --tp 2 x --dp 2");
  expect(Layout(3, 1, false, false), 3, "3 ranks do not divide moe_intermediate_size 32");
}

TEST(ParallelMoeRefusals, DoubleReductionIsRefused) {
  const Fixture& f = GetFixture("v2-lite");
  const Status s = RunLayout(f, Layout(2, 1, false, false), /*reduce_again=*/true).status();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("layer 0"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("Complete(replicated over tp)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("multiplies it"), std::string::npos) << s.message();
}

TEST(ParallelMoeRefusals, TokenShardSumIsRefused) {
  // vLLM #40560 (fixed by #40673): under SP, all-reducing outputs of ranks that hold different tokens.
  const Fixture& f = GetFixture("v2-lite");
  const Status s = RunLayout(f, Layout(2, 1, true, true), /*reduce_again=*/true).status();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("Complete(token-shard of tp)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("token shards"), std::string::npos) << s.message();
}

TEST(ParallelMoeRefusals, MismatchedDeclarationsCannotBeAdded) {
  EXPECT_FALSE(
      CheckAddable(ReductionState::Partial(Group::kTp), ReductionState::Replicated(Group::kTp), "layer 3")
          .ok());
  const Status s = PlanTransition(ReductionState::TokenShard(Group::kTp),
                                  ReductionState::Replicated(Group::kDp), "layer 3")
                       .status();
  EXPECT_NE(s.message().find("layer 3"), std::string::npos);
  EXPECT_EQ(PlanTransition(ReductionState::Partial(Group::kTp), ReductionState::Replicated(Group::kTp), "x")
                .value(),
            Collective::kAllReduce);
  EXPECT_EQ(
      PlanTransition(ReductionState::TokenShard(Group::kTp), ReductionState::Replicated(Group::kTp), "x")
          .value(),
      Collective::kAllGather);
  EXPECT_EQ(PlanTransition(ReductionState::Partial(Group::kTp), ReductionState::TokenShard(Group::kTp), "x")
                .value(),
            Collective::kReduceScatter);
  EXPECT_FALSE(
      PlanTransition(ReductionState::Replicated(Group::kTp), ReductionState::TokenShard(Group::kTp), "x")
          .ok());
}

TEST(ParallelMoeRefusals, StateReadBeforeTheKernelIsBound) {
  const Fixture& f = GetFixture("v2-lite");
  const Status s = RunRanks(2, [&](Communicator& world) -> Status {
    ThreadPool pool(1);
    ASSIGN_OR_RETURN(auto moe, ParallelMoe::Create(f.config, *f.ckpt, "", Layout(2, 1, false, false), world,
                                                   std::nullopt, &pool));
    EXPECT_TRUE(moe->RoutedOutputState().ok());
    UnbindDispatcher(*moe);
    const Status read = moe->RoutedOutputState().status();
    EXPECT_NE(read.message().find("before a dispatch kernel is bound"), std::string::npos) << read.message();
    EXPECT_FALSE(moe->Forward(f.x, 0, nullptr).ok());
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

// Every EP dispatch: each (source rank, token, slot) row reaches the rank holding its expert,
// exactly once, carrying that token's hidden state.
class DispatchProbeTest : public ::testing::TestWithParam<ParallelOptions> {};

TEST_P(DispatchProbeTest, RowsArriveWhereTheRouteSays) {
  const Fixture& f = GetFixture("v2-lite");
  const ParallelOptions o = GetParam();
  const int64_t h = f.config.hidden_size, k = f.config.num_experts_per_tok, e = f.config.n_routed_experts;
  // Token t carries its id in column 0.
  Tensor x = MakeSyntheticInput(kTokens, h, 4, DType::kF32).value();
  for (int64_t t = 0; t < kTokens; ++t) x.data<float>()[t * h] = static_cast<float>(t);
  std::mutex mu;
  std::multiset<std::tuple<int, int64_t, int32_t, int>> arrived;  // (src, token, expert, at rank)
  std::map<int, std::vector<int32_t>> routes;                     // src rank -> ids of its tokens
  std::map<int, std::pair<int64_t, int64_t>> ranges;
  const Status s = RunRanks(o.world(), [&](Communicator& world) -> Status {
    ThreadPool pool(1);
    ASSIGN_OR_RETURN(auto moe, ParallelMoe::Create(f.config, *f.ckpt, "", o, world, std::nullopt, &pool));
    const int me = world.rank();
    InstallDispatchProbe(*moe, [&, me](int src, const float* row, int32_t expert) {
      std::lock_guard<std::mutex> lock(mu);
      arrived.insert({src, static_cast<int64_t>(row[0]), expert, me});
    });
    const auto range = moe->TokenRange(kTokens);
    Routing routing;
    ASSIGN_OR_RETURN(Tensor y, moe->Forward(x.Rows(range.first, range.second), 0, &routing));
    std::lock_guard<std::mutex> lock(mu);
    routes[me] = routing.ids;
    ranges[me] = range;
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  const int64_t per_rank = e / o.world();
  std::multiset<std::tuple<int, int64_t, int32_t, int>> expected;
  for (const auto& [src, ids] : routes) {
    for (int64_t t = 0; t < ranges[src].second - ranges[src].first; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        const int32_t id = ids[t * k + j];
        expected.insert({src, ranges[src].first + t, id, static_cast<int>(id / per_rank)});
      }
    }
  }
  if (o.dispatch == DispatchKind::kAllGather && !o.sp) {
    // All-gather over DP: each rank sees the rows of its DP group's owners (TP peers are copies).
    std::multiset<std::tuple<int, int64_t, int32_t, int>> filtered;
    for (const auto& row : expected) {
      const int src = std::get<0>(row), dst = std::get<3>(row);
      if (src % o.tp == dst % o.tp) filtered.insert(row);
    }
    expected = filtered;
  }
  EXPECT_EQ(arrived, expected);
}

INSTANTIATE_TEST_SUITE_P(EpLayouts, DispatchProbeTest,
                         ::testing::Values(Layout(1, 2, true, false, DispatchKind::kAllToAll),
                                           Layout(1, 4, true, false, DispatchKind::kAllToAll),
                                           Layout(2, 2, true, false, DispatchKind::kAllToAll),
                                           Layout(2, 2, true, true, DispatchKind::kAllToAll),
                                           Layout(4, 2, true, true, DispatchKind::kAllToAll),
                                           Layout(1, 2, true, false, DispatchKind::kAllGather),
                                           Layout(2, 2, true, false, DispatchKind::kAllGather),
                                           Layout(2, 2, true, true, DispatchKind::kAllGather),
                                           Layout(2, 4, true, true, DispatchKind::kAllGather)));

}  // namespace
}  // namespace moerun
