// OpenAiServer: the HTTP side of `moerun serve` on world rank 0 (cpp-httplib): the OpenAI routes
// (/v1/models, /v1/completions, /v1/chat/completions with Server-Sent Events streaming), vLLM's
// /tokenize and /detokenize, /health, /metrics (Prometheus text) and a small chat page at /.
//
// Life cycle: Start() listens at once, so /health answers 503 with the load progress while the
// model loads; SetReady() hands over the engine; BeginDrain() (SIGTERM) refuses new generation
// requests with 503 while running ones finish; SetFailed() (a rank failed) answers 503 and ends
// pending requests with an error. The engine itself is stepped by the caller's thread
// (tools/serve_command.cc); handlers only Submit and Cancel (Engine's thread-safe calls) and read
// what the engine callbacks leave in each request's state.
//
// Each HTTP request becomes one engine sequence per (prompt, choice). A streaming client that goes
// away is noticed at the next write and its sequences are cancelled (freed at the next step).
// Bodies above max_body_bytes get 413, malformed JSON 400, unknown routes 404 — all OpenAI error
// objects — and a slow or bad client holds one HTTP thread, never the engine.
//
// Thread safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.h"
#include "engine/engine.h"
#include "serve/metrics.h"
#include "serve/openai_request.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace moerun {

struct ServerOptions {
  std::string host = "127.0.0.1";   // --host
  int port = 8080;                  // --port; 0: any free port (see port())
  int http_threads = 256;           // concurrent connections served (streams hold one each)
  size_t max_body_bytes = 8 << 20;  // larger bodies get 413
  int read_timeout_seconds = 10;    // a client that sends nothing for this long is dropped
};

class OpenAiServer {
 public:
  explicit OpenAiServer(ServerOptions options);
  ~OpenAiServer();

  // Binds and starts listening on a background thread.
  Status Start();
  int port() const { return port_; }
  void SetLoadProgress(double fraction, const std::string& what);
  // `engine` must outlive the server; `snapshot` is called at each /metrics scrape.
  void SetReady(Engine* engine, ServedModel model, std::function<EngineSnapshot()> snapshot);
  void BeginDrain();
  void SetFailed(const std::string& why);
  // Drain timeout: unfinished requests end with an error (streams: an error event, then [DONE]);
  // the caller cancels their sequences.
  void CutAll(const std::string& why);
  // HTTP generation requests not yet answered.
  int ActiveRequests() const { return active_.load(); }
  void Stop();

 private:
  struct Job;
  enum class Phase { kLoading, kReady, kDraining, kFailed };
  void Route();
  void HandleGeneration(const httplib::Request& req, httplib::Response& res, bool chat);
  std::shared_ptr<Job> Submit(GenerationRequest r, const std::string& endpoint, ApiError* error);
  void Respond(const std::shared_ptr<Job>& job, httplib::Response& res);
  void Stream(const std::shared_ptr<Job>& job, httplib::Response& res);
  void SendError(httplib::Response& res, const ApiError& e, const std::string& endpoint);
  std::string Health(int* status) const;

  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  int port_ = 0;
  ServerMetrics metrics_;

  mutable std::mutex mu_;  // guards the fields below
  Phase phase_ = Phase::kLoading;
  double load_fraction_ = 0;
  std::string load_what_, failure_;
  Engine* engine_ = nullptr;
  ServedModel model_;
  std::function<EngineSnapshot()> snapshot_;
  std::vector<std::weak_ptr<Job>> jobs_;  // for SetFailed
  std::atomic<int> active_{0};
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace moerun
