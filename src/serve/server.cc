#include "serve/server.h"

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>

#include "serve/chat_page.h"
#include "serve/openai_response.h"

namespace moerun {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const char* FinishName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
    case FinishReason::kContext:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kNone:
      break;
  }
  return nullptr;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

// One HTTP generation request: its choices (one engine sequence each) as the engine callbacks
// leave them, and the SSE payloads a streaming handler has yet to send. Guarded by mu.
struct OpenAiServer::Job {
  std::mutex mu;
  std::condition_variable cv;
  GenerationRequest request;
  std::string endpoint;  // "completions" / "chat"
  ResponseHeader header;
  Clock::time_point arrival = Clock::now();
  std::vector<ChoiceState> choices;  // [prompts x n]: what is final so far
  std::vector<size_t> prompt_of;     // choice -> prompt index
  std::vector<uint64_t> sequences;   // choice -> engine sequence id
  std::vector<bool> started, done;   // first token seen / finished
  std::vector<Clock::time_point> last_token;
  std::vector<size_t> streamed_text;  // completions: text bytes sent (text_offset base)
  std::deque<std::string> pending;    // SSE payloads not yet written
  Usage usage;
  int finished = 0;
  std::optional<ApiError> error;  // the engine failed or the server is going down
  bool all_done() const { return finished == static_cast<int>(choices.size()); }
};

OpenAiServer::OpenAiServer(ServerOptions options)
    : options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {}

OpenAiServer::~OpenAiServer() { Stop(); }

Status OpenAiServer::Start() {
  const int threads = std::max(4, options_.http_threads);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(options_.max_body_bytes);
  http_->set_read_timeout(options_.read_timeout_seconds, 0);
  http_->set_keep_alive_timeout(5);
  Route();
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
    if (port_ <= 0) return IOError("cannot bind {} to any port", options_.host);
  } else {
    if (!http_->bind_to_port(options_.host, options_.port)) {
      return IOError("cannot listen on {}:{} (in use, or not an address of this host)", options_.host,
                     options_.port);
    }
    port_ = options_.port;
  }
  listener_ = std::thread([this] { http_->listen_after_bind(); });
  return Status::Ok();
}

void OpenAiServer::Stop() {
  if (http_) http_->stop();
  if (listener_.joinable()) listener_.join();
}

void OpenAiServer::SetLoadProgress(double fraction, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  load_fraction_ = fraction;
  load_what_ = what;
}

void OpenAiServer::SetReady(Engine* engine, ServedModel model, std::function<EngineSnapshot()> snapshot) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_ = engine;
  model_ = std::move(model);
  snapshot_ = std::move(snapshot);
  phase_ = Phase::kReady;
}

void OpenAiServer::BeginDrain() {
  std::lock_guard<std::mutex> lock(mu_);
  if (phase_ == Phase::kReady || phase_ == Phase::kLoading) phase_ = Phase::kDraining;
}

void OpenAiServer::SetFailed(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = Phase::kFailed;
    failure_ = why;
  }
  CutAll("the server failed: " + why);
}

void OpenAiServer::CutAll(const std::string& why) {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& w : jobs_)
      if (auto j = w.lock()) jobs.push_back(std::move(j));
  }
  for (auto& j : jobs) {
    std::lock_guard<std::mutex> lock(j->mu);
    if (!j->error && !j->all_done()) j->error = ApiError::Unavailable(why);
    j->cv.notify_all();
  }
}

std::string OpenAiServer::Health(int* status) const {
  std::lock_guard<std::mutex> lock(mu_);
  switch (phase_) {
    case Phase::kLoading:
      *status = 503;
      return Dump({{"status", "loading"}, {"progress", load_fraction_}, {"what", load_what_}});
    case Phase::kReady:
      *status = 200;
      return Dump({{"status", "ok"}});
    case Phase::kDraining:
      *status = 503;
      return Dump({{"status", "draining"}});
    case Phase::kFailed:
      *status = 503;
      return Dump({{"status", "failed"}, {"error", failure_}});
  }
  return "";
}

void OpenAiServer::SendError(httplib::Response& res, const ApiError& e, const std::string& endpoint) {
  res.status = e.http_status;
  res.set_content(e.ToJson(), "application/json");
  if (!endpoint.empty()) metrics_.RequestFinished(endpoint, e.http_status);
}

void OpenAiServer::Route() {
  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    int status = 200;
    res.set_content(Health(&status), "application/json");
    res.status = status;
  });
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu_);
    if (phase_ == Phase::kLoading) return SendError(res, ApiError::Unavailable("the model is loading"), "");
    const Json model = {{"id", model_.name},   {"object", "model"},
                        {"created", 0},        {"owned_by", "moerun"},
                        {"root", model_.name}, {"max_model_len", model_.max_model_len}};
    res.set_content(Dump({{"object", "list"}, {"data", Json::array({model})}}), "application/json");
  });
  http_->Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGeneration(req, res, false);
  });
  http_->Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGeneration(req, res, true);
  });
  auto tokenizer_route = [this](bool encode) {
    return [this, encode](const httplib::Request& req, httplib::Response& res) {
      ServedModel model;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (phase_ == Phase::kLoading)
          return SendError(res, ApiError::Unavailable("the model is loading"), "");
        model = model_;
      }
      const Json body = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded()) {
        ApiError e;
        e.message = "the request body is not valid JSON";
        return SendError(res, e, "");
      }
      auto out = encode ? Tokenize(body, model) : Detokenize(body, model);
      if (auto* e = std::get_if<ApiError>(&out)) return SendError(res, *e, "");
      res.set_content(Dump(std::get<Json>(out)), "application/json");
    };
  };
  http_->Post("/tokenize", tokenizer_route(true));
  http_->Post("/detokenize", tokenizer_route(false));
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::function<EngineSnapshot()> snapshot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      snapshot = snapshot_;
    }
    res.set_content(metrics_.Render(snapshot ? snapshot() : EngineSnapshot{}), "text/plain; version=0.0.4");
  });
  http_->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kChatPageHtml, "text/html; charset=utf-8");
  });
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e;
    e.http_status = res.status;
    e.type = res.status == 404 ? "not_found_error" : "invalid_request_error";
    e.message = res.status == 413   ? "the request body is too large"
                : res.status == 404 ? "no route " + req.method + " " + req.path
                                    : "bad request";
    res.set_content(e.ToJson(), "application/json");
  });
  http_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, const std::exception_ptr& ep) {
        ApiError e;
        e.http_status = 500;
        e.type = "internal_error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& ex) {
          e.message = ex.what();
        } catch (...) {
          e.message = "unknown error";
        }
        res.status = 500;
        res.set_content(e.ToJson(), "application/json");
      });
}

void OpenAiServer::HandleGeneration(const httplib::Request& req, httplib::Response& res, bool chat) {
  const std::string endpoint = chat ? "chat" : "completions";
  ServedModel model;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (phase_ == Phase::kLoading)
      return SendError(res, ApiError::Unavailable("the model is loading"), endpoint);
    if (phase_ == Phase::kDraining) {
      return SendError(res, ApiError::Unavailable("the server is shutting down"), endpoint);
    }
    if (phase_ == Phase::kFailed)
      return SendError(res, ApiError::Unavailable("the server failed: " + failure_), endpoint);
    model = model_;
  }
  const Json body = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    ApiError e;
    e.message = "the request body is not valid JSON (or not UTF-8)";
    return SendError(res, e, endpoint);
  }
  ParsedRequest parsed = chat ? ParseChatRequest(body, model) : ParseCompletionRequest(body, model);
  if (auto* e = std::get_if<ApiError>(&parsed)) return SendError(res, *e, endpoint);
  ApiError error;
  std::shared_ptr<Job> job = Submit(std::move(std::get<GenerationRequest>(parsed)), endpoint, &error);
  if (job == nullptr) return SendError(res, error, endpoint);
  ++active_;
  if (job->request.stream) {
    Stream(job, res);
  } else {
    Respond(job, res);
    --active_;
  }
}

std::shared_ptr<OpenAiServer::Job> OpenAiServer::Submit(GenerationRequest r, const std::string& endpoint,
                                                        ApiError* error) {
  Engine* engine;
  const Tokenizer* tokenizer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine = engine_;
    tokenizer = model_.tokenizer;
  }
  auto job = std::make_shared<Job>();
  job->request = std::move(r);
  job->endpoint = endpoint;
  const GenerationRequest& g = job->request;
  const uint64_t serial = next_id_++;
  job->header.id = fmt::format("{}-{:016x}", g.chat ? "chatcmpl" : "cmpl", serial * 0x9E3779B97F4A7C15ull);
  job->header.created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  {
    std::lock_guard<std::mutex> lock(mu_);
    job->header.model = model_.name;
  }
  const size_t n_choices = g.prompts.size() * static_cast<size_t>(g.n);
  job->choices.resize(n_choices);
  job->prompt_of.resize(n_choices);
  job->sequences.assign(n_choices, 0);
  job->started.assign(n_choices, false);
  job->done.assign(n_choices, false);
  job->last_token.assign(n_choices, job->arrival);
  job->streamed_text.assign(n_choices, 0);
  for (size_t p = 0; p < g.prompts.size(); ++p)
    job->usage.prompt_tokens += static_cast<int64_t>(g.prompts[p].size());
  std::weak_ptr<Job> weak = job;
  const bool logprobs = g.top_logprobs >= 0;
  for (size_t c = 0; c < n_choices; ++c) {
    const size_t p = c / static_cast<size_t>(g.n);
    job->choices[c].index = static_cast<int>(c);
    job->prompt_of[c] = p;
    Request q;
    q.prompt = g.prompts[p];
    q.sampling = g.sampling;
    if (g.seeded) {
      q.sampling.seed = g.sampling.seed + c;
    } else {
      q.sampling.seed = std::chrono::steady_clock::now().time_since_epoch().count() ^ (serial << 20) ^ c;
    }
    q.max_tokens = g.max_tokens;
    q.stop_ids = g.stop_ids;
    q.stop_strings = g.stop;
    q.top_logprobs = logprobs ? g.top_logprobs : -1;
    q.prompt_logprobs = g.echo && logprobs;
    // Engine callbacks run on the engine thread: update the choice, queue SSE payloads.
    q.on_token = [this, weak, c, tokenizer, engine](const TokenEvent& e) {
      auto j = weak.lock();
      if (j == nullptr) return;
      std::lock_guard<std::mutex> lock(j->mu);
      ChoiceState& choice = j->choices[c];
      ChoiceState delta;
      delta.index = choice.index;
      const Clock::time_point now = Clock::now();
      const bool first = !j->started[c];
      if (first && e.token >= 0) metrics_.TimeToFirstToken(Seconds(now - j->arrival));
      if (!first && e.token >= 0) metrics_.InterTokenLatency(Seconds(now - j->last_token[c]));
      j->last_token[c] = now;
      if (first && j->request.echo) {  // the prompt leads the text (and its logprobs, the first null)
        const size_t pi = j->prompt_of[c];
        delta.text = j->request.prompt_texts[pi];
        if (j->request.top_logprobs >= 0) {
          const Sequence* s = engine->Find(e.sequence);
          for (size_t i = 0; i < j->request.prompts[pi].size(); ++i) {
            TokenLogprobs t;
            if (s != nullptr && i < s->prompt_logprobs().size()) t = s->prompt_logprobs()[i];
            t.token = j->request.prompts[pi][i];
            delta.logprobs.push_back(t);
            delta.logprob_known.push_back(i > 0);
          }
        }
      }
      j->started[c] = true;
      if (e.token >= 0) {
        delta.text += e.text;
        if (e.logprobs) {
          delta.logprobs.push_back(*e.logprobs);
          delta.logprob_known.push_back(true);
        }
      }
      if (e.finish != FinishReason::kNone) delta.finish_reason = FinishName(e.finish);
      choice.text += delta.text;
      choice.logprobs.insert(choice.logprobs.end(), delta.logprobs.begin(), delta.logprobs.end());
      choice.logprob_known.insert(choice.logprob_known.end(), delta.logprob_known.begin(),
                                  delta.logprob_known.end());
      if (delta.finish_reason) choice.finish_reason = delta.finish_reason;
      if (j->request.stream &&
          (!delta.text.empty() || delta.finish_reason || !delta.logprobs.empty() || first)) {
        const bool with_lp = j->request.top_logprobs >= 0;
        j->pending.push_back(Dump(
            j->request.chat ? ChatChunk(j->header, delta, first, with_lp, tokenizer)
                            : CompletionChunk(j->header, delta, with_lp, tokenizer, j->streamed_text[c])));
        j->streamed_text[c] += delta.text.size();
      }
      j->cv.notify_all();
    };
    q.on_finish = [this, weak, c, tokenizer](const Sequence& s) {
      auto j = weak.lock();
      if (j == nullptr) return;
      std::lock_guard<std::mutex> lock(j->mu);
      if (j->done[c]) return;
      j->done[c] = true;
      ++j->finished;
      j->usage.completion_tokens += s.num_generated();
      ChoiceState& choice = j->choices[c];
      if (!j->started[c] && j->request.echo) {  // nothing generated (max_tokens 0): the prompt alone
        const size_t pi = j->prompt_of[c];
        choice.text = j->request.prompt_texts[pi];
        if (j->request.top_logprobs >= 0) {
          for (size_t i = 0; i < j->request.prompts[pi].size(); ++i) {
            TokenLogprobs t = i < s.prompt_logprobs().size() ? s.prompt_logprobs()[i] : TokenLogprobs{};
            t.token = j->request.prompts[pi][i];
            choice.logprobs.push_back(t);
            choice.logprob_known.push_back(i > 0);
          }
        }
        if (j->request.stream) {
          ChoiceState delta = choice;
          delta.finish_reason = FinishName(s.finish_reason());
          const bool with_lp = j->request.top_logprobs >= 0;
          j->pending.push_back(Dump(CompletionChunk(j->header, delta, with_lp, tokenizer, 0)));
        }
      }
      if (!choice.finish_reason) choice.finish_reason = FinishName(s.finish_reason());
      if (j->all_done()) {
        metrics_.RequestLatency(Seconds(Clock::now() - j->arrival));
        metrics_.Tokens(j->usage.prompt_tokens, j->usage.completion_tokens);
      }
      j->cv.notify_all();
    };
    StatusOr<uint64_t> id = engine->Submit(std::move(q));
    if (!id.ok()) {
      for (size_t k = 0; k < c; ++k) engine->Cancel(job->sequences[k]);
      *error = ApiError::FromStatus(id.status());
      return nullptr;
    }
    std::lock_guard<std::mutex> lock(job->mu);
    job->sequences[c] = *id;
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(jobs_, [](const std::weak_ptr<Job>& w) { return w.expired(); });
  jobs_.push_back(job);
  return job;
}

void OpenAiServer::Respond(const std::shared_ptr<Job>& job, httplib::Response& res) {
  std::unique_lock<std::mutex> lock(job->mu);
  job->cv.wait(lock, [&] { return job->all_done() || job->error.has_value(); });
  if (job->error) return SendError(res, *job->error, job->endpoint);
  const GenerationRequest& g = job->request;
  const Tokenizer* tokenizer;
  {
    std::lock_guard<std::mutex> model_lock(mu_);
    tokenizer = model_.tokenizer;
  }
  const Json body =
      g.chat ? ChatResponse(job->header, job->choices, job->usage, g.top_logprobs >= 0, tokenizer)
             : CompletionResponse(job->header, job->choices, job->usage, g.top_logprobs >= 0, tokenizer);
  res.set_content(Dump(body), "application/json");
  metrics_.RequestFinished(job->endpoint, 200);
}

void OpenAiServer::Stream(const std::shared_ptr<Job>& job, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job](size_t, httplib::DataSink& sink) {
        std::deque<std::string> out;
        bool finished = false;
        std::optional<ApiError> error;
        {
          std::unique_lock<std::mutex> lock(job->mu);
          job->cv.wait_for(lock, std::chrono::milliseconds(200), [&] {
            return !job->pending.empty() || job->all_done() || job->error.has_value();
          });
          out.swap(job->pending);
          finished = job->all_done();
          error = job->error;
        }
        for (const std::string& payload : out) {
          const std::string event = "data: " + payload + "\n\n";
          if (!sink.write(event.data(), event.size())) return false;  // the client is gone
        }
        if (error) {  // cut (drain timeout) or the server failed: an error event ends the stream
          const std::string event = "data: " + error->ToJson() + "\n\ndata: [DONE]\n\n";
          sink.write(event.data(), event.size());
          sink.done();
          return true;
        }
        if (finished) {
          std::string tail;
          if (job->request.include_usage) {
            std::lock_guard<std::mutex> lock(job->mu);
            tail += "data: " + Dump(UsageChunk(job->header, job->request.chat, job->usage)) + "\n\n";
          }
          tail += "data: [DONE]\n\n";
          if (!sink.write(tail.data(), tail.size())) return false;
          sink.done();
          return true;
        }
        return sink.is_writable();
      },
      [this, job](bool success) {
        // Whatever the end (done, client gone, server stopping): free the sequences still running.
        std::vector<uint64_t> running;
        {
          std::lock_guard<std::mutex> lock(job->mu);
          for (size_t c = 0; c < job->choices.size(); ++c)
            if (!job->done[c]) running.push_back(job->sequences[c]);
        }
        Engine* engine;
        {
          std::lock_guard<std::mutex> lock(mu_);
          engine = engine_;
        }
        for (uint64_t id : running) engine->Cancel(id);
        metrics_.RequestFinished(job->endpoint, success ? 200 : 499);
        --active_;
      });
}

}  // namespace moerun
