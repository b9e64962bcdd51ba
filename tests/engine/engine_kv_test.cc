// Engine on the KV block pool (engine/engine.h, engine/kv_block_manager.h), for both cache kinds
// (tiny-arith: DeepSeek MLA; a tiny random Qwen3-MoE: GQA), in deterministic mode:
//  - a pool smaller than the total demand still completes every request, admission waiting for
//    blocks, with the ids and the logits (bitwise) each request gets alone, one at a time, without
//    prefix caching — so prefix hits, batching and chunking change nothing;
//  - a prompt sharing a prefix with an earlier sequence (its prompt or its generated ids) hits, the
//    hits are counted, and the output is bitwise what it computes without the cache;
//  - all-logits requests compute every row; a request larger than the pool is refused at Submit;
//  - every block is free again (refcounts zero) when the engine is idle;
//  - in-process TP / DP ranks build their caches from the plan's block tables.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "../testing/tiny_models.h"
#include "comm/in_process_comm.h"
#include "engine/engine.h"
#include "model/arch.h"

namespace moerun {
namespace {

std::unique_ptr<Model> LoadArch(const std::string& arch, ThreadPool* pool, Communicator* world, int tp,
                                int dp) {
  ModelLoadOptions o;
  o.parallel.tp = tp;
  o.parallel.dp = dp;
  o.parallel.deterministic = true;  // batch-invariant rows: bitwise comparisons across batchings
  StatusOr<std::unique_ptr<Model>> m =
      arch == "qwen3_moe"
          ? test_models::LoadTinySynthetic(test_models::TinyQwen3MoeConfigJson(), o, pool, world)
          : LoadModelFromDir(MOERUN_TEST_MODEL_DIR, o, pool, {}, world);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? std::move(*m) : nullptr;
}

// A common 13-id prefix, then tails of 1 to 4 ids (ids valid in both vocabularies, no specials).
std::vector<std::vector<int32_t>> SharedPrefixPrompts() {
  const std::vector<int32_t> base = {49, 50, 43, 51, 52, 43, 53, 54, 43, 55, 56, 43, 57};
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p = base;
    for (int j = 0; j <= i % 4; ++j) p.push_back(48 + (i * 3 + j) % 10);
    out.push_back(p);
  }
  out.push_back({61, 50, 43, 49, 61});  // unrelated
  return out;
}

struct Outputs {
  std::vector<std::vector<int32_t>> ids;   // generated, per prompt
  std::vector<std::vector<float>> logits;  // sampled rows, per prompt (when collected)
  int64_t steps = 0;                       // kRun steps on rank 0
  int64_t peak_used = 0;                   // most blocks of replica 0 used after a step
  KvBlockStats stats;                      // replica 0's pool when idle at the end
  std::vector<KvBlockStats> after_wave;    // replica 0's pool after each wave
};

// Submits `waves` of prompts (indices into `prompts`), running until idle after each; every rank of
// a tp x dp layout follows. max_tokens 5, greedy; logits collected when `logits` (replica 0 only).
Outputs RunWaves(const std::string& arch, int tp, int dp, EngineOptions eo,
                 const std::vector<std::vector<int32_t>>& prompts,
                 const std::vector<std::vector<size_t>>& waves, bool logits) {
  eo.tp = tp;
  Outputs out;
  out.ids.resize(prompts.size());
  out.logits.resize(prompts.size());
  const Status s = RunRanks(tp * dp, [&](Communicator& world) -> Status {
    ThreadPool pool(1);
    std::unique_ptr<Model> model = LoadArch(arch, &pool, &world, tp, dp);
    if (model == nullptr) return Internal("load failed");
    Engine engine(world, *model, nullptr, eo);
    if (world.rank() != 0) {
      while (true) {
        ASSIGN_OR_RETURN(StepKind k, engine.Step());
        if (k == StepKind::kShutdown) return Status::Ok();
      }
    }
    for (const std::vector<size_t>& wave : waves) {
      for (size_t i : wave) {
        Request r;
        r.prompt = prompts[i];
        r.max_tokens = 5;
        r.on_finish = [&out, i](const Sequence& q) {
          out.ids[i].assign(q.generated().begin(), q.generated().end());
        };
        if (logits) {
          r.on_logits = [&out, i](std::span<const float> rows, int64_t) {
            out.logits[i].insert(out.logits[i].end(), rows.begin(), rows.end());
          };
        }
        RETURN_IF_ERROR(engine.Submit(std::move(r)).status());
      }
      while (true) {
        ASSIGN_OR_RETURN(StepKind k, engine.Step());
        if (k != StepKind::kRun) break;
        ++out.steps;
        const KvBlockStats st = engine.KvStats(0);
        if (st.used_blocks > st.total_blocks)
          return Internal("{} blocks used of {}", st.used_blocks, st.total_blocks);
        out.peak_used = std::max(out.peak_used, st.used_blocks);
      }
      out.after_wave.push_back(engine.KvStats(0));
    }
    if (engine.HasWork()) return Internal("work left after the last wave");
    out.stats = engine.KvStats(0);
    for (int r = 0; r < engine.replicas(); ++r) {
      const KvBlockStats st = engine.KvStats(r);
      if (st.used_blocks != 0 || st.free_blocks != st.total_blocks)
        return Internal("replica {} idle with {} of {} blocks used", r, st.used_blocks, st.total_blocks);
    }
    return engine.Shutdown();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<size_t> All(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

class EngineKvTest : public ::testing::TestWithParam<const char*> {
 protected:
  std::string arch() const { return GetParam(); }
  // Each prompt alone, one at a time, no prefix cache, the default pool: the reference.
  Outputs Alone(const std::vector<std::vector<int32_t>>& prompts) {
    std::vector<std::vector<size_t>> waves;
    for (size_t i = 0; i < prompts.size(); ++i) waves.push_back({i});
    return RunWaves(arch(), 1, 1, {.max_batch = 1, .prefix_cache = false}, prompts, waves, true);
  }
};

TEST_P(EngineKvTest, APoolSmallerThanTheDemandCompletesEveryRequestWithTheSameOutput) {
  const auto prompts = SharedPrefixPrompts();
  const Outputs alone = Alone(prompts);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(alone.ids[i].size(), 5u) << i;
    ASSERT_FALSE(alone.logits[i].empty()) << i;
  }
  // Everything at once with the default (auto) pool: all run together.
  const Outputs free_run = RunWaves(arch(), 1, 1, {.max_batch = 8, .max_chunk = 3, .block_tokens = 4},
                                    prompts, {All(prompts.size())}, true);
  // A request needs ceil((17 + 5) / 4) = 6 blocks at most: 13 blocks hold two or three at a time.
  const EngineOptions tight{.max_batch = 8, .max_chunk = 3, .kv_blocks = 13, .block_tokens = 4};
  const Outputs tight_run = RunWaves(arch(), 1, 1, tight, prompts, {All(prompts.size())}, true);
  EXPECT_GT(free_run.peak_used, 13);
  EXPECT_LE(tight_run.peak_used, 13);
  EXPECT_GT(tight_run.steps, free_run.steps);  // admission waited for blocks
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(free_run.ids[i], alone.ids[i]) << i;
    EXPECT_EQ(tight_run.ids[i], alone.ids[i]) << i;
    EXPECT_TRUE(SameBits(free_run.logits[i], alone.logits[i])) << i;
    EXPECT_TRUE(SameBits(tight_run.logits[i], alone.logits[i])) << i;
  }
  EXPECT_EQ(tight_run.stats.total_blocks, 13);
  EXPECT_GT(tight_run.stats.hit_tokens, 0);       // later prompts reused the shared prefix
  EXPECT_EQ(free_run.stats.total_blocks, 8 * 6);  // auto: max_batch x the largest request
}

TEST_P(EngineKvTest, ASharedPrefixHitsAndGivesTheOutputItComputesWithoutTheCache) {
  auto prompts = SharedPrefixPrompts();
  prompts.resize(2);  // 13 + 1 and 13 + 2 ids
  const Outputs alone = Alone(prompts);
  // The first prompt's ids (prompt and generated) then one more: hits through the generated ids.
  std::vector<int32_t> continued = prompts[0];
  continued.insert(continued.end(), alone.ids[0].begin(), alone.ids[0].end());
  continued.push_back(44);
  prompts.push_back(continued);
  const Outputs reference = Alone(prompts);
  const Outputs cached =
      RunWaves(arch(), 1, 1, {.max_batch = 4, .block_tokens = 4}, prompts, {{0}, {1}, {2}}, true);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(cached.ids[i], reference.ids[i]) << i;
    EXPECT_TRUE(SameBits(cached.logits[i], reference.logits[i])) << i;
  }
  ASSERT_EQ(cached.after_wave.size(), 3u);
  EXPECT_EQ(cached.after_wave[0].hit_tokens, 0);
  // 15 ids: floor(14 / 4) = 3 blocks may hit, and the 13-id prefix holds 3 full blocks.
  EXPECT_EQ(cached.after_wave[1].hit_tokens, 12);
  // The first sequence cached 14 + g - 1 positions (its last generated id was never fed).
  const int64_t g = static_cast<int64_t>(alone.ids[0].size());
  const int64_t hits2 = std::min((14 + g - 1) / 4, (static_cast<int64_t>(continued.size()) - 1) / 4) * 4;
  EXPECT_EQ(cached.after_wave[2].hit_tokens - cached.after_wave[1].hit_tokens, hits2);
  EXPECT_GE(hits2, 16);
  EXPECT_EQ(cached.stats.prefix_queries, 3);
  EXPECT_EQ(cached.stats.query_tokens, 14 + 15 + static_cast<int64_t>(continued.size()));
  EXPECT_GT(cached.stats.hit_rate(), 0.5);
  // Without prefix caching: no hits, the same output.
  const Outputs off = RunWaves(arch(), 1, 1, {.max_batch = 4, .block_tokens = 4, .prefix_cache = false},
                               prompts, {{0}, {1}, {2}}, true);
  EXPECT_EQ(off.stats.hit_tokens, 0);
  EXPECT_EQ(off.stats.cached_blocks, 0);
  EXPECT_EQ(off.ids, reference.ids);
}

TEST_P(EngineKvTest, InProcessRanksBuildTheirCachesFromThePlansBlockTables) {
  const auto prompts = SharedPrefixPrompts();
  const Outputs alone = Alone(prompts);
  const EngineOptions tight{.max_batch = 3, .max_chunk = 5, .kv_blocks = 13, .block_tokens = 4};
  for (auto [tp, dp] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
    const Outputs got = RunWaves(arch(), tp, dp, tight, prompts, {{0}, All(prompts.size())}, false);
    EXPECT_EQ(got.ids, alone.ids) << "tp " << tp << " dp " << dp;
    EXPECT_GT(got.stats.hit_tokens, 0) << "tp " << tp << " dp " << dp;
  }
}

TEST_P(EngineKvTest, AllLogitsRequestsComputeEveryRowAndOversizedRequestsAreRefused) {
  ThreadPool pool(1);
  std::unique_ptr<Model> model = LoadArch(arch(), &pool, nullptr, 1, 1);
  ASSERT_NE(model, nullptr);
  const auto prompts = SharedPrefixPrompts();
  const Status s = RunRanks(1, [&](Communicator& world) -> Status {
    Engine engine(world, *model, nullptr, {.kv_blocks = 12, .block_tokens = 4});
    Request r;
    r.prompt = prompts[0];
    r.max_tokens = 2;
    RETURN_IF_ERROR(engine.Submit(r).status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    // Every prompt row of a prompt whose prefix is cached: equal to one Forward of the prompt.
    std::vector<float> rows;
    r = Request();
    r.prompt = prompts[1];
    r.max_tokens = 0;
    r.all_logits = true;
    r.on_logits = [&](std::span<const float> l, int64_t) { rows.insert(rows.end(), l.begin(), l.end()); };
    RETURN_IF_ERROR(engine.Submit(r).status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    auto cache = model->NewCache(static_cast<int64_t>(r.prompt.size()));
    std::vector<float> want;
    RETURN_IF_ERROR(model->Forward(r.prompt, cache.get(), true, &want));
    EXPECT_TRUE(SameBits(rows, want));
    EXPECT_EQ(engine.KvStats().hit_tokens, 0);
    EXPECT_EQ(engine.KvStats().prefix_queries, 1);  // the all-logits request did not look up
    // 12 blocks of 4 hold 48 positions: a context of 49 is refused, naming both numbers.
    r = Request();
    r.prompt = {50, 51};
    r.context = 49;
    const Status big = engine.Submit(r).status();
    EXPECT_NE(big.message().find("context of 49 tokens needs 13 KV blocks of 4 tokens"), std::string::npos)
        << big.ToString();
    EXPECT_NE(big.message().find("pool of 12 blocks"), std::string::npos) << big.ToString();
    r.context = 48;
    RETURN_IF_ERROR(engine.Submit(r).status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    EXPECT_EQ(engine.KvStats().used_blocks, 0);
    EXPECT_EQ(engine.KvStats().free_blocks, 12);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

INSTANTIATE_TEST_SUITE_P(Arch, EngineKvTest, ::testing::Values("deepseek_v2", "qwen3_moe"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace moerun
