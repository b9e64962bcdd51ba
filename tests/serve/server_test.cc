// The server's life cycle and request checking without a model: /health through the phases
// (loading with progress, ready, draining, failed with the reason), OpenAI error objects for
// generation routes before the model is ready, unknown routes, oversized bodies; and the request
// parser's field checks against the bounds they name.
#include "serve/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "engine/logprobs.h"

namespace moerun {
namespace {

using Json = nlohmann::json;

// A server on a free loopback port and a client of it.
struct Running {
  OpenAiServer server;
  std::unique_ptr<httplib::Client> client;
  explicit Running(ServerOptions o) : server(OnFreePort(o)) {
    EXPECT_TRUE(server.Start().ok());
    client = std::make_unique<httplib::Client>("127.0.0.1", server.port());
  }
  static ServerOptions OnFreePort(ServerOptions o) {
    o.port = 0;
    o.http_threads = 8;
    return o;
  }
};

TEST(OpenAiServer, HealthFollowsTheLifeCycle) {
  ServerOptions o;
  o.max_body_bytes = 1024;
  Running r(o);
  r.server.SetLoadProgress(0.25, "layer 3");
  auto h = r.client->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(Json::parse(h->body)["status"], "loading");
  EXPECT_DOUBLE_EQ(Json::parse(h->body)["progress"].get<double>(), 0.25);
  EXPECT_EQ(Json::parse(h->body)["what"], "layer 3");
  // Generation before the model is ready: 503 with an OpenAI error object.
  auto c = r.client->Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 503);
  EXPECT_EQ(Json::parse(c->body)["error"]["type"], "service_unavailable");
  // Routes that do not exist, bodies over the bound.
  auto nf = r.client->Get("/v2/nothing");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  EXPECT_TRUE(Json::parse(nf->body).contains("error"));
  auto big = r.client->Post("/v1/completions", std::string(4096, 'a'), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  r.server.BeginDrain();
  h = r.client->Get("/health");
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(Json::parse(h->body)["status"], "draining");
  r.server.SetFailed("rank 1: collective deadline after 120 s");
  h = r.client->Get("/health");
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(Json::parse(h->body)["status"], "failed");
  EXPECT_EQ(Json::parse(h->body)["error"], "rank 1: collective deadline after 120 s");
  c = r.client->Post("/v1/chat/completions", R"({"messages": []})", "application/json");
  EXPECT_EQ(c->status, 503);
  EXPECT_NE(Json::parse(c->body)["error"]["message"].get<std::string>().find("collective deadline"),
            std::string::npos);
  r.server.Stop();
}

ServedModel Model() {
  ServedModel m;
  m.name = "tiny";
  m.max_model_len = 64;
  m.vocab_size = 100;
  m.stop_ids = {2};
  return m;
}

const ApiError& ErrorOf(const ParsedRequest& p) {
  static const ApiError none{};
  const ApiError* e = std::get_if<ApiError>(&p);
  EXPECT_NE(e, nullptr) << "the request was accepted";
  return e != nullptr ? *e : none;
}

TEST(OpenAiRequest, FieldsAreCheckedAgainstTheirBounds) {
  const ServedModel m = Model();
  auto completion = [&](const char* body) { return ParseCompletionRequest(Json::parse(body), m); };
  auto ok = completion(R"({"prompt": [5, 6, 7], "max_tokens": 10, "temperature": 0, "n": 2, "stop": "\n",
                          "seed": 9, "logprobs": 3})");
  ASSERT_TRUE(std::holds_alternative<GenerationRequest>(ok)) << ErrorOf(ok).message;
  const GenerationRequest& g = std::get<GenerationRequest>(ok);
  EXPECT_EQ(g.prompts, (std::vector<std::vector<int32_t>>{{5, 6, 7}}));
  EXPECT_EQ(g.max_tokens, 10);
  EXPECT_EQ(g.n, 2);
  EXPECT_TRUE(g.seeded);
  EXPECT_EQ(g.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(g.stop_ids, std::vector<int32_t>{2});
  EXPECT_EQ(g.top_logprobs, 3);
  EXPECT_EQ(g.sampling.temperature, 0.0f);

  struct Case {
    const char* body;
    int status;
    const char* param;
    const char* needle;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"prompt": [5], "max_tokens": -1})", 400, "max_tokens", "outside [0,"},
           {R"({"prompt": [5], "max_tokens": 1.5})", 400, "max_tokens", "must be an integer"},
           {R"({"prompt": [5], "max_tokens": 64})", 400, "max_tokens", "maximum context length is 64"},
           {R"({"prompt": [5, 100]})", 400, "prompt", "outside the vocabulary [0, 100)"},
           {R"({"prompt": [5, -1]})", 400, "prompt", "outside the vocabulary"},
           {R"({"prompt": []})", 400, "prompt", "empty list"},
           {R"({"prompt": 7})", 400, "prompt", "must be a string or a list"},
           {R"({"prompt": [5], "temperature": 2.5})", 400, "temperature", "outside [0, 2]"},
           {R"({"prompt": [5], "n": 0})", 400, "n", "outside [1,"},
           {R"({"prompt": [5], "stop": [""]})", 400, "stop", "must not be empty"},
           {R"({"prompt": [5], "logprobs": 21})", 400, "logprobs", "outside [0, 20]"},
           {R"({"prompt": [5], "model": "other"})", 404, "model", "does not exist"},
           {R"({"prompt": [5], "presence_penalty": 0.5})", 400, "presence_penalty", "not supported"},
           {R"({"prompt": [5], "stream_options": {"include_usage": true}})", 400, "stream_options",
            "only allowed"},
           {R"({"prompt": [5], "max_tokens": 0})", 400, "max_tokens", "echo"},
           {R"({"prompt": "text needs a tokenizer"})", 400, "prompt", "no tokenizer"},
       }) {
    const ParsedRequest p = completion(c.body);
    const ApiError& e = ErrorOf(p);
    EXPECT_EQ(e.http_status, c.status) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_NE(e.message.find(c.needle), std::string::npos) << c.body << " -> " << e.message;
  }
  // Echo scoring with no generated ids is allowed; ignore_eos drops the stop ids.
  auto echo =
      completion(R"({"prompt": [5, 6], "max_tokens": 0, "echo": true, "logprobs": 1, "ignore_eos": true})");
  ASSERT_TRUE(std::holds_alternative<GenerationRequest>(echo)) << ErrorOf(echo).message;
  EXPECT_TRUE(std::get<GenerationRequest>(echo).stop_ids.empty());
}

TEST(LogprobRecord, RoundTripsTopAlternatives) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  const TokenLogprobs t = ComputeLogprobs(logits, 0, 3);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);  // ties: lower id first
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 0);
  const TokenLogprobs back = LogprobRecord::From(t).ToLogprobs();
  EXPECT_EQ(back.token, t.token);
  EXPECT_EQ(back.logprob, t.logprob);
  EXPECT_EQ(back.top, t.top);
}

}  // namespace
}  // namespace moerun
