// What a server needs from the engine: logprobs (sampled ids and prompt scoring) checked against
// an independent log-softmax of the model's own logits, on one rank and across DP replicas; stop
// strings (text cut before the match, streamed text equal to the final text); Cancel of running and
// queued sequences; the bounded queue.
#include <gtest/gtest.h>

#include <cmath>

#include "comm/in_process_comm.h"
#include "engine/engine.h"
#include "engine/stop_strings.h"
#include "model/arch.h"

namespace moerun {
namespace {

std::unique_ptr<Model> LoadTiny(ThreadPool* pool, Communicator* world, int dp) {
  ModelLoadOptions o;
  o.parallel.dp = dp;
  o.parallel.deterministic = true;  // batch-invariant: logprobs comparable across layouts
  auto m = LoadModelFromDir(MOERUN_TEST_MODEL_DIR, o, pool, {}, world);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? std::move(*m) : nullptr;
}

std::vector<int32_t> Encode(const std::string& s) {
  static const auto tok = Tokenizer::FromDirectory(MOERUN_TEST_MODEL_DIR).value();
  return tok->Encode(s, true);
}

// The oracle: log_softmax(row)[id] by a plain log-sum-exp in long double.
double RefLogprob(std::span<const float> row, int32_t id) {
  long double mx = row[0], sum = 0;
  for (float x : row) mx = std::max<long double>(mx, x);
  for (float x : row) sum += std::exp(static_cast<long double>(x) - mx);
  return static_cast<double>(row[static_cast<size_t>(id)] - mx - std::log(sum));
}

TEST(EngineLogprobs, SampledIdsCarryTheirLogprobAndTopAlternatives) {
  ThreadPool pool(1);
  std::unique_ptr<Model> model = LoadTiny(&pool, nullptr, 1);
  ASSERT_NE(model, nullptr);
  const int64_t v = model->hparams().vocab_size;
  const Status s = RunRanks(1, [&](Communicator& world) -> Status {
    Engine engine(world, *model, nullptr, {});
    std::vector<float> rows;
    std::vector<TokenEvent> events;
    Request r;
    r.prompt = Encode("12+7=");
    r.max_tokens = 4;
    r.top_logprobs = 3;
    r.sampling.temperature = 0.8f;  // logprobs are the model's, not the sampler's
    r.sampling.seed = 5;
    r.on_logits = [&](std::span<const float> l, int64_t) { rows.insert(rows.end(), l.begin(), l.end()); };
    r.on_token = [&](const TokenEvent& e) { events.push_back(e); };
    RETURN_IF_ERROR(engine.Submit(r).status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    EXPECT_EQ(events.size(), 4u);
    for (size_t i = 0; i < events.size(); ++i) {
      const std::span<const float> row(rows.data() + i * v, static_cast<size_t>(v));
      const TokenEvent& e = events[i];
      if (!e.logprobs.has_value()) return Internal("event {} has no logprobs", i);
      EXPECT_EQ(e.logprobs->token, e.token);
      EXPECT_NEAR(e.logprobs->logprob, RefLogprob(row, e.token), 1e-5);
      EXPECT_EQ(e.logprobs->top.size(), 3u);
      for (size_t k = 0; k < e.logprobs->top.size(); ++k) {
        const auto [id, lp] = e.logprobs->top[k];
        EXPECT_NEAR(lp, RefLogprob(row, id), 1e-5);
        if (k > 0) {
          EXPECT_GE(e.logprobs->top[k - 1].second, lp);
        }
      }
      // The best alternative is the argmax.
      EXPECT_EQ(e.logprobs->top[0].first, std::max_element(row.begin(), row.end()) - row.begin());
    }
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(EngineLogprobs, PromptScoringMatchesTheModelsLogits) {
  ThreadPool pool(1);
  std::unique_ptr<Model> model = LoadTiny(&pool, nullptr, 1);
  ASSERT_NE(model, nullptr);
  const int64_t v = model->hparams().vocab_size;
  const std::vector<int32_t> prompt = Encode("40+41=81");
  std::vector<float> want;
  auto cache = model->NewCache(static_cast<int64_t>(prompt.size()));
  ASSERT_TRUE(model->Forward(prompt, cache.get(), true, &want).ok());
  const Status s = RunRanks(1, [&](Communicator& world) -> Status {
    Engine engine(world, *model, nullptr, {.max_chunk = 3});  // chunks: rows across steps
    std::vector<TokenLogprobs> got;
    Request r;
    r.prompt = prompt;
    r.max_tokens = 0;
    r.prompt_logprobs = true;
    r.top_logprobs = 2;
    r.on_finish = [&](const Sequence& q) { got = q.prompt_logprobs(); };
    RETURN_IF_ERROR(engine.Submit(r).status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    EXPECT_EQ(got.size(), prompt.size());
    for (size_t i = 1; i < got.size(); ++i) {
      const std::span<const float> row(want.data() + (i - 1) * v, static_cast<size_t>(v));
      EXPECT_EQ(got[i].token, prompt[i]);
      EXPECT_NEAR(got[i].logprob, RefLogprob(row, prompt[i]), 1e-5) << "prompt id " << i;
      EXPECT_EQ(got[i].top.size(), 2u);
    }
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

// Logprobs of replica 1's sequences travel to rank 0 with their ids: the same as on one rank.
TEST(EngineLogprobs, DataParallelReplicasReportTheSameLogprobs) {
  auto run = [](int dp) {
    std::vector<std::vector<LogprobRecord>> out(4);
    const Status s = RunRanks(dp, [&](Communicator& world) -> Status {
      ThreadPool pool(1);
      std::unique_ptr<Model> model = LoadTiny(&pool, &world, dp);
      if (model == nullptr) return Internal("load failed");
      Engine engine(world, *model, nullptr, {});
      if (world.rank() != 0) return engine.RunUntilIdle();
      const char* prompts[] = {"3+4=", "9+9=", "100+23=", "5+0="};
      for (size_t i = 0; i < 4; ++i) {
        Request r;
        r.prompt = Encode(prompts[i]);
        r.max_tokens = 3;
        r.top_logprobs = 4;
        r.on_token = [&out, i](const TokenEvent& e) { out[i].push_back(LogprobRecord::From(*e.logprobs)); };
        RETURN_IF_ERROR(engine.Submit(std::move(r)).status());
      }
      return engine.RunUntilIdle();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  const auto one = run(1), two = run(2);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    ASSERT_EQ(one[i].size(), 3u);
    ASSERT_EQ(two[i].size(), 3u);
    for (size_t t = 0; t < 3; ++t)
      EXPECT_EQ(std::memcmp(&one[i][t], &two[i][t], sizeof(LogprobRecord)), 0)
          << "sequence " << i << " id " << t;
  }
}

TEST(StopStrings, FindsTheEarliestMatchAndHoldsBackPossibleStarts) {
  const std::vector<std::string> stops = {"\n\n", "END", ""};
  EXPECT_EQ(FindStop("abc\n\ndef", 0, stops), 3u);
  EXPECT_EQ(FindStop("xxENDyy\n\n", 0, stops), 2u);
  EXPECT_EQ(FindStop("abc", 0, stops), std::string::npos);
  // Only matches ending in the new text: "EN" + "D" arrives.
  EXPECT_EQ(FindStop("abcEND", 5, stops), 3u);
  EXPECT_EQ(FindStop("END abc", 6, stops), std::string::npos);
  EXPECT_EQ(HeldBackBytes("abc\n", stops), 1u);
  EXPECT_EQ(HeldBackBytes("abcEN", stops), 2u);
  EXPECT_EQ(HeldBackBytes("abcE", stops), 1u);
  EXPECT_EQ(HeldBackBytes("abc", stops), 0u);
  EXPECT_EQ(HeldBackBytes("", stops), 0u);
}

// Generates greedily from `prompt` with `stops`; returns (final text, streamed text, reason).
struct TextRun {
  std::string text, streamed;
  FinishReason reason = FinishReason::kNone;
  std::vector<int32_t> ids;
};
TextRun RunText(Model& model, const std::vector<int32_t>& prompt, std::vector<std::string> stops) {
  static const auto tok = Tokenizer::FromDirectory(MOERUN_TEST_MODEL_DIR).value();
  TextRun out;
  const Status s = RunRanks(1, [&](Communicator& world) -> Status {
    Engine engine(world, model, tok.get(), {});
    Request r;
    r.prompt = prompt;
    r.max_tokens = 12;
    r.stop_strings = std::move(stops);
    r.on_token = [&](const TokenEvent& e) { out.streamed += e.text; };
    r.on_finish = [&](const Sequence& q) {
      out.text = q.text();
      out.reason = q.finish_reason();
      out.ids.assign(q.generated().begin(), q.generated().end());
    };
    RETURN_IF_ERROR(engine.Submit(r).status());
    return engine.RunUntilIdle();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(EngineStopStrings, TextEndsBeforeTheStopStringAndStreamsTheSame) {
  ThreadPool pool(1);
  std::unique_ptr<Model> model = LoadTiny(&pool, nullptr, 1);
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> prompt = Encode("12+7=19\n3+4=7\n9+");
  const TextRun free = RunText(*model, prompt, {});
  ASSERT_GE(free.text.size(), 4u) << free.text;
  EXPECT_EQ(free.streamed, free.text);
  // A stop string taken from the middle of the free-running text, spanning two characters.
  const std::string stop = free.text.substr(2, 2);
  const size_t cut = free.text.find(stop);
  const TextRun stopped = RunText(*model, prompt, {"never-there", stop});
  EXPECT_EQ(stopped.text, free.text.substr(0, cut));
  EXPECT_EQ(stopped.streamed, stopped.text);
  EXPECT_EQ(stopped.reason, FinishReason::kStop);
  EXPECT_LT(stopped.ids.size(), free.ids.size());
}

TEST(EngineCancel, RunningAndQueuedSequencesEnd) {
  ThreadPool pool(1);
  std::unique_ptr<Model> model = LoadTiny(&pool, nullptr, 1);
  ASSERT_NE(model, nullptr);
  const Status s = RunRanks(1, [&](Communicator& world) -> Status {
    Engine engine(world, *model, nullptr, {.max_batch = 1});
    FinishReason first = FinishReason::kNone, second = FinishReason::kNone;
    int64_t first_ids = -1, second_ids = -1;
    uint64_t id1 = 0;
    Request a;
    a.prompt = Encode("1+1=");
    a.max_tokens = 40;
    a.on_token = [&](const TokenEvent& e) {
      if (e.finish == FinishReason::kNone && e.token >= 0) engine.Cancel(id1);  // from inside a step
    };
    a.on_finish = [&](const Sequence& q) {
      first = q.finish_reason();
      first_ids = q.num_generated();
    };
    Request b = a;
    b.on_token = nullptr;
    b.on_finish = [&](const Sequence& q) {
      second = q.finish_reason();
      second_ids = q.num_generated();
    };
    ASSIGN_OR_RETURN(id1, engine.Submit(a));
    ASSIGN_OR_RETURN(uint64_t id2, engine.Submit(b));
    EXPECT_TRUE(engine.Cancel(id2));   // queued behind a (max_batch 1)
    EXPECT_FALSE(engine.Cancel(id2));  // once
    EXPECT_FALSE(engine.Cancel(12345));
    RETURN_IF_ERROR(engine.RunUntilIdle());
    EXPECT_EQ(first, FinishReason::kCancelled);
    EXPECT_EQ(first_ids, 1);  // cancelled before the second id was planned
    EXPECT_EQ(second, FinishReason::kCancelled);
    EXPECT_EQ(second_ids, 0);
    EXPECT_FALSE(engine.HasWork());
    EXPECT_EQ(engine.CurrentLoad().running + engine.CurrentLoad().queued, 0);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(EngineQueue, ABoundedQueueRefusesWithResourceExhausted) {
  ThreadPool pool(1);
  std::unique_ptr<Model> model = LoadTiny(&pool, nullptr, 1);
  ASSERT_NE(model, nullptr);
  const Status s = RunRanks(1, [&](Communicator& world) -> Status {
    Engine engine(world, *model, nullptr, {.max_queue = 2});
    Request r;
    r.prompt = Encode("2+2=");
    r.max_tokens = 2;
    RETURN_IF_ERROR(engine.Submit(r).status());
    RETURN_IF_ERROR(engine.Submit(r).status());
    const Status full = engine.Submit(r).status();
    EXPECT_EQ(full.code(), StatusCode::kResourceExhausted) << full.ToString();
    EXPECT_NE(full.message().find("at most 2"), std::string::npos) << full.message();
    EXPECT_EQ(engine.CurrentLoad().queued, 2);
    RETURN_IF_ERROR(engine.RunUntilIdle());
    return engine.Submit(r).status();  // room again
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace moerun
