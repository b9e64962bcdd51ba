// `moerun serve`: an OpenAI-compatible HTTP server (src/serve/) over the engine, on any layout.
// World rank 0 listens at once (/health reports the load), loads its model like every rank, then
// steps the engine; the other ranks step with it (in-process threads, or processes under mpirun).
// SIGTERM / SIGINT drain: new requests get 503, running ones finish (at most --drain-timeout
// seconds, then they are cut with an error event), every rank shuts down, exit 0. Under mpirun,
// signal world rank 0's process (its pid is printed at start): Open MPI's mpirun answers a
// SIGTERM of its own by killing the whole job.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "comm/mpi_comm.h"
#include "engine/engine.h"
#include "serve/server.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"

namespace moerun {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

struct ServeArgs {
  ModelArgs model;
  ServerOptions server;
  std::string served_name;            // default: the model directory's name
  int max_num_seqs = 32;              // running sequences per DP replica
  int64_t max_batched_tokens = 2048;  // tokens per replica per step (decodes first, then prefill chunks)
  int64_t max_queue = 1024;           // waiting requests before 429
  int64_t max_model_len = 0;          // 0: max_position_embeddings
  double drain_timeout = 30;          // seconds running requests get on SIGTERM
};

std::string DefaultServedName(const std::string& model) {
  std::filesystem::path p(model);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  if (name.size() > 5 && name.ends_with(".gguf")) name.resize(name.size() - 5);
  return name.empty() ? "default" : name;
}

// Rank 0: serve until a signal, then drain and shut every rank down.
Status ServeOnRankZero(const ServeArgs& a, Engine& engine, OpenAiServer& server) {
  while (!g_stop.load()) {
    StatusOr<StepKind> step = engine.Step(std::chrono::milliseconds(100));
    if (!step.ok()) {
      server.SetFailed(step.status().message());
      return step.status();
    }
  }
  std::fprintf(stderr, "moerun: draining (%d HTTP requests open)\n", server.ActiveRequests());
  server.BeginDrain();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.drain_timeout);
  while (engine.HasWork() && std::chrono::steady_clock::now() < deadline)
    RETURN_IF_ERROR(engine.Step().status());
  if (engine.HasWork()) {
    server.CutAll(fmt::format("the server is shutting down: the request was cut after the {} s drain timeout",
                              a.drain_timeout));
    std::fprintf(stderr, "moerun: drain timeout: cutting %d sequences\n", engine.CancelAll());
    RETURN_IF_ERROR(engine.RunUntilIdle());
  }
  // Let streaming handlers write their last events before the listener stops.
  for (int i = 0; i < 50 && server.ActiveRequests() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  RETURN_IF_ERROR(engine.Shutdown());
  server.Stop();
  std::fprintf(stderr, "moerun: stopped\n");
  return Status::Ok();
}

Status RunServe(const ServeArgs& a) {
  ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  if (a.max_num_seqs < 1) return InvalidArgument("--max-num-seqs {} must be >= 1", a.max_num_seqs);
  if (a.max_batched_tokens < 1)
    return InvalidArgument("--max-num-batched-tokens {} must be >= 1", a.max_batched_tokens);
  if (a.max_queue < 1) return InvalidArgument("--max-queue {} must be >= 1", a.max_queue);
  if (a.max_model_len < 0) return InvalidArgument("--max-model-len {} must be >= 0", a.max_model_len);
  std::unique_ptr<Tokenizer> tok;
  if (HasTokenizer(a.model.model_dir)) {
    ASSIGN_OR_RETURN(tok, LoadTokenizer(a.model.model_dir));
  }
  const int threads = a.model.threads > 0 ? a.model.threads : DefaultThreadsPerProcess();
  return RunOnRanks(par.world(), threads, [&](Communicator& world, int rank_threads) -> Status {
    ThreadPool pool(rank_threads);
    std::unique_ptr<OpenAiServer> server;
    if (world.rank() == 0) {
      server = std::make_unique<OpenAiServer>(a.server);
      RETURN_IF_ERROR(server->Start());
      std::fprintf(stderr, "moerun: listening on http://%s:%d (pid %d; loading the model)\n",
                   a.server.host.c_str(), server->port(), static_cast<int>(getpid()));
    }
    LoadProgress progress;
    if (server) progress = [&](double f, const std::string& what) { server->SetLoadProgress(f, what); };
    StatusOr<std::unique_ptr<Model>> model = LoadModel(a.model, &pool, &world, progress);
    if (!model.ok()) {
      if (server) server->SetFailed(model.status().message());
      return model.status();
    }
    const ModelConfig& c = (*model)->hparams();
    const int64_t max_len = a.max_model_len > 0 ? a.max_model_len : c.max_position_embeddings;
    if (max_len > c.max_position_embeddings) {
      return InvalidArgument("--max-model-len {} exceeds the model's max_position_embeddings {}", max_len,
                             c.max_position_embeddings);
    }
    Engine engine(world, **model, tok.get(),
                  EngineOptions{.tp = par.tp,
                                .max_batch = a.max_num_seqs,
                                .max_step_tokens = a.max_batched_tokens,
                                .max_queue = a.max_queue});
    if (world.rank() != 0) {
      while (true) {
        ASSIGN_OR_RETURN(StepKind kind, engine.Step());
        if (kind == StepKind::kShutdown) return Status::Ok();
      }
    }
    ServedModel served;
    served.name = a.served_name.empty() ? DefaultServedName(a.model.model_dir) : a.served_name;
    served.max_model_len = max_len;
    served.vocab_size = static_cast<int32_t>(c.vocab_size);
    if (c.eos_token_id >= 0) served.stop_ids = {static_cast<int32_t>(c.eos_token_id)};
    served.tokenizer = tok.get();
    const Model& m = **model;
    CollectiveLog* log = world.log();
    server->SetReady(&engine, served, [&engine, &m, log] {
      EngineSnapshot s;
      const Engine::Load load = engine.CurrentLoad();
      s.running = load.running;
      s.waiting = load.queued;
      s.expert_tokens = m.RoutedTokenCounts();
      if (log != nullptr) s.collective_seconds = log->SecondsByOp();
      return s;
    });
    std::fprintf(stderr, "moerun: serving %s on http://%s:%d\n", served.name.c_str(), a.server.host.c_str(),
                 server->port());
    const Status s = ServeOnRankZero(a, engine, *server);
    if (!s.ok()) (void)engine.Abort(s);
    return s;
  });
}

}  // namespace

void RegisterServeCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (completions, chat, streaming)");
  AddModelOptions(cmd, &a->model);
  cmd->add_option("--host", a->server.host, "Address to listen on");
  cmd->add_option("--port", a->server.port, "Port (0: any free port, printed on stderr)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--served-model-name", a->served_name,
                  "Model name in the API (default: the model's directory name)");
  cmd->add_option("--max-num-seqs", a->max_num_seqs, "Running sequences per DP replica");
  cmd->add_option("--max-num-batched-tokens", a->max_batched_tokens,
                  "Tokens per replica per step: decodes first, prompt chunks share the rest");
  cmd->add_option("--max-queue", a->max_queue, "Waiting requests before new ones get 429");
  cmd->add_option("--max-model-len", a->max_model_len,
                  "Context per request (default: max_position_embeddings)");
  cmd->add_option("--drain-timeout", a->drain_timeout, "Seconds running requests get to finish on SIGTERM");
  cmd->add_option("--http-threads", a->server.http_threads, "Concurrent HTTP connections");
  cmd->callback([a, exit_code] {
    const Status s = RunServe(*a);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
