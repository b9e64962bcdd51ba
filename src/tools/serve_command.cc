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
#include <thread>

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
  std::string kv_cache_memory;        // per rank, e.g. "4GiB"; empty: see kv_cache_tokens
  int64_t kv_cache_tokens = 0;        // KV positions per DP replica, e.g. 65536; 0 with no memory: auto
  int64_t block_size = 16;            // positions per KV block
  bool no_prefix_caching = false;
  int fault_fail_rank = -1;          // testing: this rank stops stepping with an error once loaded
  std::string chat_template_kwargs;  // JSON, e.g. {"enable_thinking": false}; requests override
};

// "4GiB", "512MiB", "2G", "1000000" -> bytes.
StatusOr<int64_t> ParseBytes(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    return InvalidArgument("--kv-cache-memory '{}' is not a size (e.g. 4GiB, 512MiB, 2G)", s);
  }
  const std::string unit = s.substr(used);
  const std::pair<const char*, double> units[] = {
      {"", 1},     {"B", 1},           {"K", 1e3}, {"KB", 1e3}, {"KiB", 1024.0},      {"M", 1e6},
      {"MB", 1e6}, {"MiB", 1048576.0}, {"G", 1e9}, {"GB", 1e9}, {"GiB", 1073741824.0}};
  for (const auto& [name, scale] : units) {
    if (unit == name) {
      if (!(v > 0) || v * scale > 9e18)
        return InvalidArgument("--kv-cache-memory '{}' must be a positive size", s);
      return static_cast<int64_t>(v * scale);
    }
  }
  return InvalidArgument("--kv-cache-memory '{}': unknown unit '{}' (B, K, KiB, M, MiB, G, GiB)", s, unit);
}

// KV blocks per replica from --kv-cache-memory (this rank's bytes per position) or
// --kv-cache-tokens; 0: the engine's pool grows on demand.
StatusOr<int64_t> KvBlocks(const ServeArgs& a, const Model& model) {
  if (a.block_size < 1 || a.block_size > 4096) {
    return InvalidArgument("--block-size {} is outside [1, 4096]", a.block_size);
  }
  if (a.kv_cache_tokens < 0) return InvalidArgument("--kv-cache-tokens {} must be >= 0", a.kv_cache_tokens);
  if (!a.kv_cache_memory.empty() && a.kv_cache_tokens > 0) {
    return InvalidArgument("give --kv-cache-memory or --kv-cache-tokens, not both");
  }
  if (a.kv_cache_tokens > 0) return (a.kv_cache_tokens + a.block_size - 1) / a.block_size;
  if (a.kv_cache_memory.empty()) return int64_t{0};
  ASSIGN_OR_RETURN(const int64_t bytes, ParseBytes(a.kv_cache_memory));
  const double per_block = model.CacheBytesPerToken() * static_cast<double>(a.block_size);
  const int64_t blocks = static_cast<int64_t>(static_cast<double>(bytes) / per_block);
  if (blocks < 1) {
    return InvalidArgument("--kv-cache-memory {} holds no KV block ({} bytes each: {} positions x {} bytes)",
                           a.kv_cache_memory, per_block, a.block_size, model.CacheBytesPerToken());
  }
  return blocks;
}

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
      // A rank failed: /health and every request answer 503 with the reason until we are stopped.
      server.SetFailed(step.status().message());
      std::fprintf(stderr, "moerun: error: %s (serving 503 until SIGTERM)\n",
                   step.status().message().c_str());
      while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      server.Stop();
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
  ChatTemplateKwargs chat_kwargs;
  if (!a.chat_template_kwargs.empty()) {
    ASSIGN_OR_RETURN(chat_kwargs,
                     ParseChatTemplateKwargsText(a.chat_template_kwargs, "--chat-template-kwargs"));
  }
  if (a.max_batched_tokens < 1)
    return InvalidArgument("--max-num-batched-tokens {} must be >= 1", a.max_batched_tokens);
  if (a.max_queue < 1) return InvalidArgument("--max-queue {} must be >= 1", a.max_queue);
  if (a.max_model_len < 0) return InvalidArgument("--max-model-len {} must be >= 0", a.max_model_len);
  std::unique_ptr<Tokenizer> tok;
  if (HasTokenizer(a.model.model_dir)) {
    ASSIGN_OR_RETURN(tok, LoadTokenizer(a.model.model_dir));
  }
  const int threads = a.model.threads > 0 ? a.model.threads : DefaultThreadsPerProcess();
  ASSIGN_OR_RETURN(RankFingerprint agree, ModelFingerprint(a.model, "serve"));
  agree.Add("--max-num-seqs", std::to_string(a.max_num_seqs));
  agree.Add("--max-num-batched-tokens", std::to_string(a.max_batched_tokens));
  agree.Add("--max-model-len", std::to_string(a.max_model_len));
  agree.Add("--kv-cache-memory", a.kv_cache_memory);
  agree.Add("--kv-cache-tokens", std::to_string(a.kv_cache_tokens));
  agree.Add("--block-size", std::to_string(a.block_size));
  agree.Add("--no-prefix-caching", a.no_prefix_caching ? "on" : "off");
  return RunOnRanks(a.model.parallel, threads, agree, [&](Communicator& world, int rank_threads) -> Status {
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
    ASSIGN_OR_RETURN(const int64_t kv_blocks, KvBlocks(a, **model));
    if (kv_blocks > 0 && kv_blocks * a.block_size < max_len) {
      return InvalidArgument(
          "the KV pool holds {} positions per replica, less than one request's context {} "
          "(--max-model-len)",
          kv_blocks * a.block_size, max_len);
    }
    EngineOptions eo{.tp = par.tp,
                     .max_batch = a.max_num_seqs,
                     .max_step_tokens = a.max_batched_tokens,
                     .max_queue = a.max_queue};
    eo.kv_blocks = kv_blocks;
    eo.block_tokens = a.block_size;
    eo.prefix_cache = !a.no_prefix_caching;
    Engine engine(world, **model, tok.get(), eo);
    if (world.rank() == 0) {
      std::fprintf(stderr, "moerun: KV cache: %s per replica, blocks of %lld positions, prefix caching %s\n",
                   kv_blocks > 0
                       ? fmt::format("{} blocks ({} positions)", kv_blocks, kv_blocks * a.block_size).c_str()
                       : "grows on demand",
                   static_cast<long long>(a.block_size), a.no_prefix_caching ? "off" : "on");
    }
    if (world.rank() != 0 && world.rank() == a.fault_fail_rank) {
      return Internal("rank {}: --fault-fail-rank: this rank stops (testing)", world.rank());
    }
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
    served.deepseek_chat_fallback = c.model_type.starts_with("deepseek");
    served.chat_kwargs = chat_kwargs;
    const Model& m = **model;
    CollectiveLog* log = world.log();
    server->SetReady(&engine, served, [&engine, &m, log] {
      EngineSnapshot s;
      const Engine::Load load = engine.CurrentLoad();
      s.running = load.running;
      s.waiting = load.queued;
      s.expert_tokens = m.RoutedTokenCounts();
      for (int r = 0; r < engine.replicas(); ++r) {
        const KvBlockStats kv = engine.KvStats(r);
        s.kv_blocks_used += kv.used_blocks;
        s.kv_blocks_total += kv.total_blocks;
        s.prefix_queries += static_cast<uint64_t>(kv.query_tokens);
        s.prefix_hits += static_cast<uint64_t>(kv.hit_tokens);
      }
      if (log != nullptr) s.collective_seconds = log->SecondsByOp();
      return s;
    });
    std::fprintf(stderr, "moerun: serving %s on http://%s:%d\n", served.name.c_str(), a.server.host.c_str(),
                 server->port());
    Status s = ServeOnRankZero(a, engine, *server);
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
  cmd->add_option(
      "--kv-cache-memory", a->kv_cache_memory,
      "KV cache budget per rank, e.g. 4GiB (a request waits for blocks; default: grows on demand)");
  cmd->add_option("--kv-cache-tokens", a->kv_cache_tokens, "KV cache budget per DP replica in positions");
  cmd->add_option("--block-size", a->block_size, "Positions per KV cache block");
  cmd->add_option("--fault-fail-rank", a->fault_fail_rank, "Testing: this rank (> 0) fails once loaded")
      ->group("Fault injection");
  cmd->add_option("--chat-template-kwargs", a->chat_template_kwargs,
                  "Chat template variables as JSON, e.g. '{\"enable_thinking\": false}' (a request's "
                  "chat_template_kwargs override them)");
  cmd->add_flag("--no-enable-prefix-caching", a->no_prefix_caching,
                "Do not reuse the KV blocks of earlier requests' common prompt prefixes");
  cmd->callback([a, exit_code] {
    const Status s = RunServe(*a);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
