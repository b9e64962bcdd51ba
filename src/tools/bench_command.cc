// moerun bench: llama-bench style prompt processing (pp) and generation (tg) tokens/s of a whole
// model, with the machine's decode bound measured around each timed generation; and
// moerun read-bandwidth: the same read probe alone, so a peer engine's runs (scripts/bench.sh) get
// a bound measured at their own moment.
//
// Why around each run: on a shared host the read bandwidth two threads get moves by up to 1.7x
// within seconds (e.g. 47 vs 79 GB/s on this project's 2-vCPU Zen 5 machines), so one probe
// taken before a 20 s model load says little about the decode that follows. Each timed tg gets
// its own bound, from probes just before and just after it; the fraction reached is the mean over
// runs of tg / that bound (docs/benchmarks.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "comm/mpi_comm.h"
#include "engine/engine.h"
#include "kernels/read_bandwidth.h"
#include "model/model.h"
#include "tools/bandwidth_probe.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

struct BenchArgs {
  ModelArgs model;
  int n_prompt = 512;  // pp: prefill this many tokens into an empty cache
  int n_gen = 128;     // tg: decode this many tokens one at a time
  int n_depth = 0;     // tg: after an untimed prompt of this many tokens (llama-bench's -d), e.g. 4096
  int reps = 3;
  std::string output = "md";  // md | json
};

// Cache positions a run needs at most: the pp prompt, or tg's prompt ({2} or the depth's ids), its
// first id and the n_gen decoded ones.
int CachePositions(const BenchArgs& a) { return std::max(a.n_prompt, std::max(a.n_depth, 1) + 1 + a.n_gen); }

struct MeanSd {
  double mean = 0, sd = 0;
};
MeanSd Stats(const std::vector<double>& v) {
  MeanSd r;
  if (v.empty()) return r;
  for (double x : v) r.mean += x;
  r.mean /= static_cast<double>(v.size());
  for (double x : v) r.sd += (x - r.mean) * (x - r.mean);
  r.sd = v.size() > 1 ? std::sqrt(r.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return r;
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

// One timed generation and the read bandwidth just before and just after it.
struct TgRun {
  double tokens_per_s = 0;  // n_gen / the run's time (llama-bench's tg)
  // 1 / the median of the run's n_gen step times (from one id's event to the next): the rate of a
  // typical step, without the steps the host preempted (tens of ms now and then).
  double median_step_ts = 0;
  ReadProbes read;
  double Bound(double bytes_per_token) const {
    return bytes_per_token > 0 ? read.Mean() * 1e9 / bytes_per_token : 0;
  }
};

// What the hardware allowed this run, beside what it got.
struct BenchBound {
  double read_gbs = 0, read_min = 0, read_max = 0;  // over every probe of the run
  size_t probes = 0;                                // how many there were
  double bytes_per_token = 0, tg_bound = 0;         // tg_bound at the mean read_gbs
  double fraction = 0;                              // mean over tg runs of tg / its own bound
  double fraction_median_step = 0;                  // the same of median_step_ts
  double peak_rss = 0, file_bytes = 0, kv_bytes = 0;
};

BenchBound Bound(const Model& model, const BenchArgs& a, const BandwidthProbe& probe, int world,
                 const std::vector<TgRun>& tg) {
  BenchBound b;
  const std::vector<double>& all = probe.all();
  if (!all.empty()) {
    b.read_gbs = Stats(all).mean;
    b.read_min = *std::min_element(all.begin(), all.end());
    b.read_max = *std::max_element(all.begin(), all.end());
  }
  b.probes = all.size();
  b.bytes_per_token = model.DecodeWeightBytesPerToken() * world;  // every rank's share
  b.tg_bound = b.bytes_per_token > 0 ? b.read_gbs * 1e9 / b.bytes_per_token : 0;
  for (const TgRun& r : tg) {
    const double bound = r.Bound(b.bytes_per_token);
    b.fraction += bound > 0 ? r.tokens_per_s / bound / static_cast<double>(tg.size()) : 0;
    b.fraction_median_step += bound > 0 ? r.median_step_ts / bound / static_cast<double>(tg.size()) : 0;
  }
  b.peak_rss = probe.peak_rss();
  b.file_bytes = FileBytes(a.model.model_dir);
  b.kv_bytes = model.CacheBytesPerToken() * CachePositions(a);
  return b;
}

void PrintBench(const BenchArgs& a, const Model& model, const std::string& layout,
                const std::vector<double>& pp, const std::vector<TgRun>& tg, const BenchBound& b) {
  const ModelConfig& c = model.hparams();
  std::vector<double> tg_ts;
  for (const TgRun& r : tg) tg_ts.push_back(r.tokens_per_s);
  // depth: the context the test's tokens were computed after (llama-bench's "tg128 @ d4096").
  auto row = [&](const char* test, int n, int depth, const std::vector<double>& v) {
    if (v.empty()) return;
    const MeanSd m = Stats(v);
    if (a.output == "json") {
      std::printf(
          "{\"model\": \"%s\", \"layers\": %lld, \"layout\": \"%s\", \"test\": \"%s%d\", "
          "\"n_depth\": %d, \"avg_ts\": %.3f, \"stddev_ts\": %.3f, \"reps\": %zu}\n",
          a.model.model_dir.c_str(), static_cast<long long>(c.num_hidden_layers), layout.c_str(), test, n,
          depth, m.mean, m.sd, v.size());
    } else {
      const std::string at = depth > 0 ? fmt::format(" @ d{}", depth) : "";
      std::printf("| %s | %lld | %s | %s%d%s | %.2f ± %.2f |\n", c.model_type.c_str(),
                  static_cast<long long>(c.num_hidden_layers), layout.c_str(), test, n, at.c_str(), m.mean,
                  m.sd);
    }
  };
  if (a.output == "md") std::printf("| model | layers | layout | test | t/s |\n|---|---:|---|---:|---:|\n");
  row("pp", a.n_prompt, 0, pp);
  row("tg", a.n_gen, a.n_depth, tg_ts);
  const double rss_ratio = b.peak_rss / std::max(1.0, b.file_bytes + b.kv_bytes);
  if (a.output == "json") {
    std::string runs;
    for (const TgRun& r : tg) {
      runs += fmt::format(
          "{}{{\"ts\": {:.4f}, \"median_step_ts\": {:.4f}, \"read_before\": {:.4f}, \"read_after\": {:.4f}}}",
          runs.empty() ? "" : ", ", r.tokens_per_s, r.median_step_ts, r.read.before, r.read.after);
    }
    std::printf(
        "{\"read_gbs\": %.4f, \"read_gbs_min\": %.4f, \"read_gbs_max\": %.4f, \"weight_bytes_per_token\": "
        "%.0f, "
        "\"tg_bound_ts\": %.4f, \"tg_fraction\": %.5f, \"tg_fraction_median_step\": %.5f, \"tg_runs\": [%s], "
        "\"peak_rss_bytes\": %.0f, \"file_bytes\": %.0f, \"kv_bytes\": %.0f}\n",
        b.read_gbs, b.read_min, b.read_max, b.bytes_per_token, b.tg_bound, b.fraction, b.fraction_median_step,
        runs.c_str(), b.peak_rss, b.file_bytes, b.kv_bytes);
    return;
  }
  std::printf(
      "bound: read %.1f GB/s (mean of %zu probes just before and after each tg run; %.1f-%.1f), %.3f GB of "
      "weights per decoded token -> tg bound %.2f t/s; reached %.0f%% (mean over tg runs of t/s / the bound "
      "of its own probes), %.0f%% at each run's median step time\n"
      "memory: peak RSS %.2f GB (model files %.2f GB + KV cache %.3f GB; ratio %.2f)\n",
      b.read_gbs, b.probes, b.read_min, b.read_max, b.bytes_per_token / 1e9, b.tg_bound, 100 * b.fraction,
      100 * b.fraction_median_step, b.peak_rss / 1e9, b.file_bytes / 1e9, b.kv_bytes / 1e9, rss_ratio);
}

Status RunBench(const BenchArgs& a) {
  if (a.n_prompt < 0 || a.n_gen < 0 || a.n_depth < 0 || a.reps < 1)
    return InvalidArgument("-p, -n, -d must be >= 0 and -r >= 1");
  if (a.output != "md" && a.output != "json") return InvalidArgument("-o '{}' is not md or json", a.output);
  ModelArgs model_args = a.model;
  model_args.kv_tokens = CachePositions(a);
  ASSIGN_OR_RETURN(RankFingerprint agree, ModelFingerprint(a.model, "bench"));
  agree.Add("-p", std::to_string(a.n_prompt));
  agree.Add("-n", std::to_string(a.n_gen));
  agree.Add("-d", std::to_string(a.n_depth));
  agree.Add("-r", std::to_string(a.reps));
  // One probe per process, by as many threads as the process computes with.
  BandwidthProbe probe(a.model.threads > 0 ? a.model.threads : DefaultThreadsPerProcess());
  return RunModelOnRanks(model_args, agree, [&](Communicator& world, Model& model, bool) -> Status {
    const ModelConfig& c = model.hparams();
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int32_t> tok(2, static_cast<int32_t>(c.vocab_size - 1));
    std::vector<int32_t> prompt(static_cast<size_t>(a.n_prompt)), depth(static_cast<size_t>(a.n_depth));
    for (int32_t& t : prompt) t = tok(rng);
    for (int32_t& t : depth) t = tok(rng);
    std::vector<double> pp;
    std::vector<TgRun> tg;
    // pp: the prompt into an empty cache in one step; tg: n_gen ids decoded one per step, both
    // through the engine's step protocol. Every repetition runs the same prompt: no prefix caching,
    // so each one computes it. tg's prompt is {2}, or the depth's ids, and no stop id; only the
    // n_gen decode steps after the first generated id are timed (from that id's event to the last
    // one's, on rank 0, which reports), as llama-bench times its tg calls.
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
        std::chrono::steady_clock::time_point first, last;  // events of the first and last ids
        int64_t events = 0;
        std::vector<double> steps;  // seconds from each id's event to the next one's
        r.prompt = a.n_depth > 0 ? depth : std::vector<int32_t>{2};
        r.max_tokens = a.n_gen + 1;
        r.on_token = [&](const TokenEvent&) {
          const auto now = std::chrono::steady_clock::now();
          if (events++ == 0) {
            first = now;
          } else {
            steps.push_back(std::chrono::duration<double>(now - last).count());
          }
          last = now;
        };
        TgRun run;
        if (rep > 0) {
          ASSIGN_OR_RETURN(run.read.before, probe.Now(world));
        }
        ASSIGN_OR_RETURN(const double s, timed(std::move(r)));
        if (rep > 0) {
          ASSIGN_OR_RETURN(run.read.after, probe.Now(world));
          // (Ranks other than 0 see no events; their figure is not reported.)
          const double decode_s = events > 1 ? std::chrono::duration<double>(last - first).count() : s;
          run.tokens_per_s = a.n_gen / decode_s;
          run.median_step_ts = run.tokens_per_s;
          if (!steps.empty()) {
            std::sort(steps.begin(), steps.end());
            run.median_step_ts = 1 / steps[steps.size() / 2];
          }
          tg.push_back(run);
        }
      }
    }
    if (tg.empty()) RETURN_IF_ERROR(probe.Now(world).status());  // pp only: the bandwidth still shown
    if (world.rank() != 0) return Status::Ok();
    ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
    const std::string layout = fmt::format("{} ranks ({})", world.size(), par.ToString());
    PrintBench(a, model, layout, pp, tg, Bound(model, a, probe, world.size(), tg));
    return Status::Ok();
  });
}

// ---- read-bandwidth ----
struct ReadBandwidthArgs {
  int threads = 0;            // 0: the machine's default (DefaultThreadsPerProcess)
  std::string output = "md";  // md | json
};

Status RunReadBandwidth(const ReadBandwidthArgs& a) {
  if (a.output != "md" && a.output != "json") return InvalidArgument("-o '{}' is not md or json", a.output);
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadsPerProcess());
  const double gbs = MeasureReadBandwidth(&pool);
  if (a.output == "json") {
    std::printf("{\"read_gbs\": %.2f, \"threads\": %d}\n", gbs, pool.size());
  } else {
    std::printf("read bandwidth: %.1f GB/s (%d threads)\n", gbs, pool.size());
  }
  return Status::Ok();
}

}  // namespace

void RegisterBenchCommands(CLI::App& app, int* exit_code) {
  auto bench = std::make_shared<BenchArgs>();
  CLI::App* bc =
      app.add_subcommand("bench", "Prompt processing (pp) and generation (tg) tokens/s, llama-bench style");
  AddModelOptions(bc, &bench->model);
  bc->add_option("-p,--n-prompt", bench->n_prompt, "Prompt tokens for pp")->check(AtLeast(0));
  bc->add_option("-n,--n-gen", bench->n_gen, "Generated tokens for tg")->check(AtLeast(0));
  bc->add_option("-d,--n-depth", bench->n_depth,
                 "tg decodes after an untimed prompt of this many tokens (llama-bench's depth; pp unchanged)")
      ->check(AtLeast(0));
  bc->add_option("-r,--repetitions", bench->reps, "Repetitions (mean ± sd)")->check(AtLeast(1));
  bc->add_option("-o,--output", bench->output, "md|json");
  bc->callback([bench, exit_code] {
    const Status s = RunBench(*bench);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });

  auto rb = std::make_shared<ReadBandwidthArgs>();
  CLI::App* rc = app.add_subcommand(
      "read-bandwidth", "The machine's read bandwidth now (the probe bench uses: GB/s summed over threads)");
  rc->add_option("-t,--threads", rb->threads, "Reading threads (default: as moerun would compute with)")
      ->check(AtLeast(1));
  rc->add_option("-o,--output", rb->output, "md|json");
  rc->callback([rb, exit_code] {
    const Status s = RunReadBandwidth(*rb);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
