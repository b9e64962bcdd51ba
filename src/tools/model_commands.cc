// moerun logits / tokenize / bench / inspect: whole models of any registered architecture.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <tuple>

#include "comm/mpi_comm.h"
#include "engine/engine.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "kernels/read_bandwidth.h"
#include "model/arch.h"
#include "model/model.h"
#include "model/model_loading.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

// ---- logits ----
struct LogitsArgs;
Status WriteLogits(const LogitsArgs& a, const Model& model, const std::vector<int32_t>& ids,
                   const std::vector<float>& logits);

struct LogitsArgs {
  ModelArgs model;
  std::string tokens;
  std::string output;
  bool decode = false;  // one token per step through the KV cache instead of one prefill
};

Status RunLogits(const LogitsArgs& a) {
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseTokenList(a.tokens));
  ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
  ModelArgs model_args = a.model;  // --max-memory: the prompt's cache and every row's logits
  model_args.kv_tokens = model_args.logit_rows = static_cast<int64_t>(ids.size());
  ASSIGN_OR_RETURN(RankFingerprint agree, ModelFingerprint(a.model, "logits"));
  agree.Add("--tokens", IdsField(ids));
  agree.Add("--decode", a.decode ? "on" : "off");
  return RunModelOnRanks(model_args, agree, [&](Communicator& world, Model& model, bool) -> Status {
    // The prompt only (max_tokens 0), every row's logits: one prefill, or with --decode one token
    // per step through the cache.
    Engine engine(world, model, nullptr, EngineOptions{.tp = par.tp, .max_chunk = a.decode ? 1 : 0});
    if (world.rank() != 0) return engine.RunUntilIdle();
    std::vector<float> logits;
    Request r;
    r.prompt = ids;
    r.max_tokens = 0;
    r.all_logits = true;
    r.on_logits = [&](std::span<const float> rows, int64_t) {
      logits.insert(logits.end(), rows.begin(), rows.end());
    };
    StatusOr<uint64_t> id = engine.Submit(std::move(r));
    if (!id.ok()) return engine.Abort(id.status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    return WriteLogits(a, model, ids, logits);
  });
}

Status WriteLogits(const LogitsArgs& a, const Model& model, const std::vector<int32_t>& ids,
                   const std::vector<float>& logits) {
  const int64_t v = model.hparams().vocab_size;
  ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kF32, {static_cast<int64_t>(ids.size()), v}));
  std::copy(logits.begin(), logits.end(), t.data<float>());
  RETURN_IF_ERROR(WriteSafetensors(a.output, {{"logits", t}}));
  std::fprintf(stderr, "moerun: wrote logits [%zu, %lld] to %s\n", ids.size(), static_cast<long long>(v),
               a.output.c_str());
  return Status::Ok();
}

// ---- tokenize ----
struct TokenizeArgs {
  std::string model_dir;  // needs only tokenizer.json (+ tokenizer_config.json)
  std::string text;
  std::string file;
  bool no_special = false;
};

Status RunTokenize(const TokenizeArgs& a) {
  if (a.text.empty() == a.file.empty()) return InvalidArgument("give exactly one of -p TEXT or -f FILE");
  ASSIGN_OR_RETURN(auto tok, LoadTokenizer(a.model_dir));
  auto print = [&](std::string_view line) {
    const std::vector<int32_t> ids = tok->Encode(line, !a.no_special);
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? "," : "", ids[i]);
    std::printf("\n");
  };
  if (!a.text.empty()) {
    print(a.text);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string content, ReadFileToString(a.file));
  size_t begin = 0;
  while (begin < content.size()) {
    size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    print(std::string_view(content).substr(begin, end - begin));
    begin = end + 1;
  }
  return Status::Ok();
}

// ---- bench (llama-bench style) ----
struct BenchArgs {
  ModelArgs model;
  int n_prompt = 512;  // pp: prefill this many tokens into an empty cache
  int n_gen = 128;     // tg: decode this many tokens one at a time
  int reps = 3;
  std::string output = "md";  // md | json
};

struct MeanSd {
  double mean = 0, sd = 0;
};
MeanSd Stats(const std::vector<double>& v) {
  MeanSd r;
  for (double x : v) r.mean += x;
  r.mean /= static_cast<double>(v.size());
  for (double x : v) r.sd += (x - r.mean) * (x - r.mean);
  r.sd = v.size() > 1 ? std::sqrt(r.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return r;
}

// What the hardware allows this run, beside what it got.
struct BenchBound {
  double read_gbs = 0, bytes_per_token = 0, tg_bound = 0, fraction = 0;
  double peak_rss = 0, file_bytes = 0, kv_bytes = 0;
};

// VmHWM of /proc/self/status: this process's peak resident set, in bytes (0 if unreadable).
double PeakRssBytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  double kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) kb = std::atof(line + 6);
  }
  std::fclose(f);
  return kb * 1024.0;
}

// Restarts the peak at the current RSS (Linux: "5" to /proc/self/clear_refs).
void ResetPeakRss() {
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

double FileBytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return static_cast<double>(fs::file_size(path, ec));
  double total = 0;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".safetensors" || ext == ".gguf") total += static_cast<double>(e.file_size(ec));
  }
  return total;
}

BenchBound Bound(const Model& model, const BenchArgs& a, double read_gbs, int world, double tg_ts) {
  BenchBound b;
  b.read_gbs = read_gbs;
  b.bytes_per_token = model.DecodeWeightBytesPerToken() * world;  // every rank's share
  b.tg_bound = b.bytes_per_token > 0 ? read_gbs * 1e9 / b.bytes_per_token : 0;
  b.fraction = b.tg_bound > 0 ? tg_ts / b.tg_bound : 0;
  b.file_bytes = FileBytes(a.model.model_dir);
  b.kv_bytes = model.CacheBytesPerToken() * std::max(a.n_prompt, a.n_gen);
  return b;
}

Status RunBench(const BenchArgs& a) {
  if (a.n_prompt < 0 || a.n_gen < 0 || a.reps < 1) return InvalidArgument("-p, -n must be >= 0 and -r >= 1");
  if (a.output != "md" && a.output != "json") return InvalidArgument("-o '{}' is not md or json", a.output);
  ModelArgs model_args = a.model;
  model_args.kv_tokens = std::max(a.n_prompt, 1 + a.n_gen);
  // The machine bound of this run: read bandwidth measured just before, by as many threads as the
  // process uses, before any rank starts — so no peer waits for the probe in MPI_Init or a
  // collective (a short --collective-timeout would fail there). Under mpirun every process probes
  // at the same time and the bound is their sum (the bandwidth all ranks share, on one host or many).
  ThreadPool probe(a.model.threads > 0 ? a.model.threads : DefaultThreadsPerProcess());
  float read_gbs = static_cast<float>(MeasureReadBandwidth(&probe));
  ResetPeakRss();  // the probe's buffer is not the model's
  ASSIGN_OR_RETURN(RankFingerprint agree, ModelFingerprint(a.model, "bench"));
  agree.Add("-p", std::to_string(a.n_prompt));
  agree.Add("-n", std::to_string(a.n_gen));
  agree.Add("-r", std::to_string(a.reps));
  return RunModelOnRanks(model_args, agree, [&](Communicator& world, Model& model, bool) -> Status {
    const ModelConfig& c = model.hparams();
    if (StartedByMpirun()) RETURN_IF_ERROR(world.AllReduce(&read_gbs, 1, ReduceType::kF32Sum));
    const double load_peak = PeakRssBytes();
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int32_t> tok(2, static_cast<int32_t>(c.vocab_size - 1));
    std::vector<int32_t> prompt(static_cast<size_t>(a.n_prompt));
    for (int32_t& t : prompt) t = tok(rng);
    std::vector<double> pp, tg;
    // pp: the prompt into an empty cache in one step; tg: n_gen ids decoded one per step (prompt
    // {2}, no stop id), both through the engine's step protocol. Every repetition runs the same
    // prompt: no prefix caching, so each one computes it.
    Engine engine(world, model, nullptr, EngineOptions{.tp = a.model.parallel.tp, .prefix_cache = false});
    auto timed = [&](Request r) -> StatusOr<double> {
      RETURN_IF_ERROR(world.Barrier());
      const auto t0 = std::chrono::steady_clock::now();
      if (world.rank() == 0) {
        StatusOr<uint64_t> id = engine.Submit(std::move(r));
        if (!id.ok()) return engine.Abort(id.status());
      }
      RETURN_IF_ERROR(engine.RunUntilIdle());
      RETURN_IF_ERROR(world.Barrier());
      return SecondsSince(t0);
    };
    for (int rep = 0; rep < a.reps + 1; ++rep) {  // rep 0 warms up
      if (a.n_prompt > 0) {
        Request r;
        r.prompt = prompt;
        r.max_tokens = 0;
        ASSIGN_OR_RETURN(const double s, timed(std::move(r)));
        if (rep > 0) pp.push_back(a.n_prompt / s);
      }
      if (a.n_gen > 0) {
        Request r;
        r.prompt = {2};
        r.max_tokens = a.n_gen;
        ASSIGN_OR_RETURN(const double s, timed(std::move(r)));
        if (rep > 0) tg.push_back(a.n_gen / s);
      }
    }
    if (world.rank() != 0) return Status::Ok();
    ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
    const std::string layout = fmt::format("{} ranks ({})", world.size(), par.ToString());
    auto row = [&](const char* test, int n, const std::vector<double>& v) {
      if (v.empty()) return;
      const MeanSd m = Stats(v);
      if (a.output == "json") {
        std::printf(
            "{\"model\": \"%s\", \"layers\": %lld, \"layout\": \"%s\", \"test\": \"%s%d\", "
            "\"avg_ts\": %.3f, \"stddev_ts\": %.3f, \"reps\": %zu}\n",
            a.model.model_dir.c_str(), static_cast<long long>(c.num_hidden_layers), layout.c_str(), test, n,
            m.mean, m.sd, v.size());
      } else {
        std::printf("| %s | %lld | %s | %s%d | %.2f ± %.2f |\n", c.model_type.c_str(),
                    static_cast<long long>(c.num_hidden_layers), layout.c_str(), test, n, m.mean, m.sd);
      }
    };
    if (a.output == "md") {
      std::printf("| model | layers | layout | test | t/s |\n|---|---:|---|---:|---:|\n");
    }
    row("pp", a.n_prompt, pp);
    row("tg", a.n_gen, tg);
    BenchBound b = Bound(model, a, read_gbs, world.size(), tg.empty() ? 0.0 : Stats(tg).mean);
    b.peak_rss = std::max(load_peak, PeakRssBytes());
    if (a.output == "json") {
      std::printf(
          "{\"read_gbs\": %.2f, \"weight_bytes_per_token\": %.0f, \"tg_bound_ts\": %.3f, \"tg_fraction\": "
          "%.3f, "
          "\"peak_rss_bytes\": %.0f, \"file_bytes\": %.0f, \"kv_bytes\": %.0f}\n",
          b.read_gbs, b.bytes_per_token, b.tg_bound, b.fraction, b.peak_rss, b.file_bytes, b.kv_bytes);
    } else {
      std::printf(
          "bound: read %.1f GB/s (measured just before), %.3f GB of weights per decoded token -> tg bound "
          "%.2f t/s, reached %.0f%%\nmemory: peak RSS %.2f GB (model files %.2f GB + KV cache %.3f GB; "
          "ratio %.2f)\n",
          b.read_gbs, b.bytes_per_token / 1e9, b.tg_bound, 100 * b.fraction, b.peak_rss / 1e9,
          b.file_bytes / 1e9, b.kv_bytes / 1e9, b.peak_rss / std::max(1.0, b.file_bytes + b.kv_bytes));
    }
    return Status::Ok();
  });
}

// ---- inspect ----
Status RunInspect(const ModelArgs& a) {
  if (IsGgufPath(a.model_dir)) return InspectGguf(a);
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(a.model_dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromJson(text, a.model_dir + "/config.json"));
  std::printf("family: %s; model_type %s\n", FindArch(c.model_type)->family, c.model_type.c_str());
  std::printf("config: %s\n", c.Summary().c_str());
  ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(a.model_dir));
  ASSIGN_OR_RETURN(const std::optional<WeightFormat> requested, a.kernels.Format());
  uint64_t params = 0, bytes = 0;
  double resident = 0;
  std::printf(
      "| tensor | dtype | shape | held as (--weight-format %s) | bytes held |\n|---|---|---|---|---:|\n",
      a.kernels.weight_format.c_str());
  for (const std::string& name : ckpt->Names()) {
    const SafetensorsEntry* e = ckpt->Find(name);
    const ResidentForm held = ResidentFormOf(name, e->dtype, e->shape, requested);
    std::printf("| %s | %s | %s | %s | %.0f |\n", name.c_str(), std::string(DTypeName(e->dtype)).c_str(),
                ShapeToString(e->shape).c_str(), held.format.c_str(), held.bytes);
    uint64_t n = 1;
    for (int64_t d : e->shape) n *= static_cast<uint64_t>(d);
    params += n;
    bytes += e->end - e->begin;
    resident += held.bytes;
  }
  std::printf("tensors: %zu, parameters: %llu, bytes: %llu\n", ckpt->Names().size(),
              static_cast<unsigned long long>(params), static_cast<unsigned long long>(bytes));
  PrintMemorySummary(c, resident);
  ASSIGN_OR_RETURN(KernelPolicy policy, a.kernels.Policy());
  std::printf("%s\n", DescribeKernelChoice(policy).c_str());
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadCount());
  Status s = LoadModel(a, &pool).status();
  std::printf("validation: %s\n", s.ok() ? "OK" : s.ToString().c_str());
  return s;
}

}  // namespace

void RegisterModelCommands(CLI::App& app, int* exit_code) {
  auto logits = std::make_shared<LogitsArgs>();
  CLI::App* lc = app.add_subcommand("logits", "Run one prefill and write logits [n_tokens, vocab] f32");
  AddModelOptions(lc, &logits->model);
  lc->add_option("--tokens", logits->tokens, "Token ids, comma-separated")->required();
  lc->add_option("-o,--output", logits->output, "Output safetensors (tensor 'logits')")->required();
  lc->add_flag("--decode", logits->decode,
               "Feed the tokens one at a time through the KV cache (decode path)");
  lc->callback([logits, exit_code] {
    const Status s = RunLogits(*logits);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });

  auto tk = std::make_shared<TokenizeArgs>();
  CLI::App* tc =
      app.add_subcommand("tokenize", "Print token ids (comma-separated; one line per input line with -f)");
  tc->add_option("-m,--model", tk->model_dir, "Directory with tokenizer.json (and tokenizer_config.json)")
      ->required();
  tc->add_option("-p,--prompt", tk->text, "Text to tokenize");
  tc->add_option("-f,--file", tk->file, "File to tokenize line by line");
  tc->add_flag("--no-special", tk->no_special, "Do not add BOS/special prefix tokens");
  tc->callback([tk, exit_code] {
    const Status s = RunTokenize(*tk);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });

  auto bench = std::make_shared<BenchArgs>();
  CLI::App* bc =
      app.add_subcommand("bench", "Prompt processing (pp) and generation (tg) tokens/s, llama-bench style");
  AddModelOptions(bc, &bench->model);
  bc->add_option("-p,--n-prompt", bench->n_prompt, "Prompt tokens for pp")->check(AtLeast(0));
  bc->add_option("-n,--n-gen", bench->n_gen, "Generated tokens for tg")->check(AtLeast(0));
  bc->add_option("-r,--repetitions", bench->reps, "Repetitions (mean ± sd)")->check(AtLeast(1));
  bc->add_option("-o,--output", bench->output, "md|json");
  bc->callback([bench, exit_code] {
    const Status s = RunBench(*bench);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });

  auto inspect = std::make_shared<ModelArgs>();
  CLI::App* ic = app.add_subcommand("inspect", "Config summary, tensor table and validation result");
  AddModelOptions(ic, inspect.get());
  ic->callback([inspect, exit_code] {
    const Status s = RunInspect(*inspect);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
