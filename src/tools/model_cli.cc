#include "tools/model_cli.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "comm/mpi_comm.h"
#include "io/atomic_file.h"
#include "model/arch.h"
#include "model/gguf_model.h"
#include "model/synthetic_model.h"
#include "tools/cli_util.h"
#include "tools/file_identity.h"
#include "tools/memory_budget.h"

namespace moerun {

StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) {
      return InvalidArgument("--tokens: item {} of '{}' is empty (ids are separated by single commas)",
                             ids.size() + 1, s);
    }
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (end == item.c_str() || *end != '\0' || v < 0 || v > INT32_MAX) {
      return InvalidArgument("--tokens: '{}' is not a token id (a non-negative integer)", item);
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return InvalidArgument("--tokens is empty");
  if (s.back() == ',') return InvalidArgument("--tokens: '{}' ends with a comma", s);
  return ids;
}

void AddModelOptions(CLI::App* cmd, ModelArgs* a) {
  // Default: the tiny trained model committed under models/ (the embedded default), or $MOERUN_MODEL.
  const char* env = std::getenv("MOERUN_MODEL");
  a->model_dir = env != nullptr ? env : MOERUN_DEFAULT_MODEL_DIR;
  cmd->add_option("-m,--model", a->model_dir,
                  "Checkpoint directory (config.json + safetensors) or a llama.cpp .gguf file (deepseek2, "
                  "qwen2moe, qwen3moe, olmoe, llama MoE)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  a->kernels.Add(cmd);
  cmd->add_flag("--check-tensors", a->check_tensors, "Scan every tensor for NaN/Inf before use");
  cmd->add_option("--load-format", a->load_format,
                  "auto (the files under -m) | dummy (config.json only, random weights, as vLLM)")
      ->capture_default_str();
  cmd->add_option(
         "--max-memory", a->max_memory,
         "Refuse the run (with the estimate) when weights + KV cache + outputs would exceed this many "
         "bytes, e.g. 8G (default: no budget)")
      ->transform(CLI::AsSizeValue(false));
  a->parallel.Add(cmd);
}

namespace {

// --max-memory: refuses before any weight is read when the estimate from the config exceeds it.
Status CheckBudget(const ModelArgs& a, const ModelConfig& config, const ModelLoadOptions& o) {
  if (a.max_memory == 0) return Status::Ok();
  const MemoryEstimate e = EstimateMemory(config, o.weight_format,
                                          MemoryUse{.kv_tokens = a.kv_tokens,
                                                    .logit_rows = a.logit_rows,
                                                    .tp = o.parallel.tp,
                                                    .dp = o.parallel.dp,
                                                    .mpi = StartedByMpirun()});
  return CheckMemoryBudget(e, a.max_memory);
}

StatusOr<ModelConfig> ReadDirConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ModelConfig::FromJson(text, path);
}

}  // namespace

bool IsGgufPath(const std::string& model) {
  return model.size() > 5 && model.compare(model.size() - 5, 5, ".gguf") == 0;
}

bool HasTokenizer(const std::string& model) {
  return IsGgufPath(model) || std::filesystem::exists(model + "/tokenizer.json");
}

StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model) {
  if (!IsGgufPath(model)) return Tokenizer::FromDirectory(model);
  ASSIGN_OR_RETURN(std::shared_ptr<GgufFile> file, GgufFile::Open(model));
  ASSIGN_OR_RETURN(HfTokenizerText text, GgufTokenizerText(*file));
  return Tokenizer::FromJsonWithConfig(text.tokenizer_json, model + " (tokenizer.ggml.*)",
                                       text.tokenizer_config_json, model + " (tokenizer.ggml.* config)");
}

StatusOr<std::unique_ptr<Model>> LoadModel(const ModelArgs& a, ThreadPool* pool, Communicator* world,
                                           const LoadProgress& on_progress) {
  ModelLoadOptions o;
  ASSIGN_OR_RETURN(o.parallel, a.parallel.ToOptions());
  ASSIGN_OR_RETURN(o.weight_format, a.kernels.Format());
  ASSIGN_OR_RETURN(o.kernels, a.kernels.Policy());
  o.check_tensors = a.check_tensors;
  const auto t0 = std::chrono::steady_clock::now();
  const bool lead = world == nullptr || world->rank() == 0;
  auto progress = [lead, &on_progress](double f, const std::string& what) {
    if (!lead) return;
    if (on_progress) on_progress(f, what);
    std::fprintf(stderr, "\rmoerun: loading [%-30s] %3.0f%% %-12s",
                 std::string(static_cast<size_t>(f * 30), '#').c_str(), f * 100, what.c_str());
    if (f >= 1.0) std::fprintf(stderr, "\n");
  };
  std::unique_ptr<Model> model;
  if (a.load_format != "auto" && a.load_format != "dummy") {
    return InvalidArgument("--load-format '{}' is not one of auto, dummy", a.load_format);
  }
  if (a.load_format == "dummy") {
    // vLLM's --load-format dummy: the shapes of config.json, random weights generated straight
    // into the packed format (no file is read but config.json).
    ASSIGN_OR_RETURN(ModelConfig config, ReadDirConfig(a.model_dir));
    RETURN_IF_ERROR(CheckBudget(a, config, o));
    const DType dtype = o.weight_format ? Traits(*o.weight_format).storage : DType::kBF16;
    ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTensorSource> source,
                     SyntheticTensorSource::Create(config, dtype, /*seed=*/1, pool));
    ASSIGN_OR_RETURN(model, LoadModelFromSource(std::move(source), config, o, pool, progress, world));
  } else if (IsGgufPath(a.model_dir)) {
    ASSIGN_OR_RETURN(GgufModel g, OpenGgufModel(a.model_dir));
    RETURN_IF_ERROR(CheckBudget(a, g.config, o));
    if (const std::string warning = GgufConversionWarning(*g.file, o.weight_format);
        lead && !warning.empty()) {
      std::fprintf(stderr, "%s\n", warning.c_str());
    }
    ASSIGN_OR_RETURN(model, LoadModelFromSource(std::move(g.tensors), g.config, o, pool, progress, world));
  } else {
    if (a.max_memory > 0) {
      ASSIGN_OR_RETURN(ModelConfig config, ReadDirConfig(a.model_dir));
      RETURN_IF_ERROR(CheckBudget(a, config, o));
    }
    ASSIGN_OR_RETURN(model, LoadModelFromDir(a.model_dir, o, pool, progress, world));
  }
  if (lead && a.parallel.stats) {
    // --stats: every collective of each forward pass, as the transition executor labelled it.
    model->set_collective_sink([n = 0](const std::vector<CollectiveRecord>& records) mutable {
      std::fprintf(stderr, "{\"forward\": %d, \"collectives\": %s}\n", n++, CollectivesJson(records).c_str());
    });
  }
  if (lead) {
    std::fprintf(stderr, "moerun: %s\nmoerun: loaded in %.2f s, %d ranks x %d threads (%s)\n",
                 model->hparams().Summary().c_str(), SecondsSince(t0), world ? world->size() : 1,
                 pool->size(), o.parallel.ToString().c_str());
  }
  return model;
}

StatusOr<RankFingerprint> ModelFingerprint(const ModelArgs& a, const std::string& command) {
  RankFingerprint fp;
  fp.Add("command", command);
  fp.Add("--load-format", a.load_format);
  RETURN_IF_ERROR(AddModelIdentity(&fp, a.model_dir, /*config_only=*/a.load_format == "dummy"));
  fp.Add("--check-tensors", a.check_tensors ? "on" : "off");
  a.kernels.AddFields(&fp);
  return fp;
}

std::string IdsField(std::span<const int32_t> ids) {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) text += fmt::format("{}{}", i ? "," : "", ids[i]);
  return fmt::format("{} ids: {}", ids.size(), ShownOrDigest(text));
}

// Runs body(world, model, owns_sequence) on every rank of the layout (one rank when no layout flag
// is given). The sequence belongs to DP replica 0; other replicas run every step with no tokens.
void PrintMemorySummary(const ModelConfig& c, double weights_bytes) {
  const double kv_per_token = EstimateMemory(c, std::nullopt, MemoryUse{.kv_tokens = 1}).kv_cache;
  const int64_t context = c.max_position_embeddings;
  std::printf(
      "memory: weights %.2f GB as held; KV cache %.3f MB per token, %.2f GB at %lld tokens "
      "(one replica, summed over its TP ranks)\n",
      weights_bytes / 1e9, kv_per_token / 1e6, kv_per_token * static_cast<double>(context) / 1e9,
      static_cast<long long>(context));
}

Status RunModelOnRanks(const ModelArgs& a, const RankFingerprint& agree,
                       const std::function<Status(Communicator&, Model&, bool)>& body) {
  ASSIGN_OR_RETURN(ParallelOptions options, a.parallel.ToOptions());
  const int threads = a.threads > 0 ? a.threads : DefaultThreadsPerProcess();
  return RunOnRanks(a.parallel, threads, agree, [&](Communicator& world, int rank_threads) -> Status {
    ThreadPool pool(rank_threads);
    ASSIGN_OR_RETURN(auto model, LoadModel(a, &pool, &world));
    return body(world, *model, world.rank() / options.tp == 0);
  });
}

}  // namespace moerun
