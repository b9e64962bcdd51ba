// moerun moe-layer: run one MoE block from files and write its output.
#include <filesystem>
#include <string>

#include "comm/mpi_comm.h"
#include "core/cpu_features.h"
#include "core/finite_scan.h"
#include "io/safetensors.h"
#include "model/model_loading.h"
#include "moe/moe_reference.h"
#include "moe/parallel_moe.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/file_identity.h"
#include "tools/kernel_flags.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

struct MoeLayerArgs {
  std::string config;   // config.json (default: <weights dir>/config.json)
  std::string weights;  // layer .safetensors, or a checkpoint directory
  std::string prefix;   // e.g. "model.layers.1.mlp." inside a checkpoint
  std::string input;    // safetensors with hidden_states [T, H]
  std::string output;   // safetensors to write
  int threads = 0;      // 0 = all CPUs
  KernelFlags kernels;
  bool check = false;
  bool check_tensors = false;  // scan the block's weights for NaN/Inf before use
  int repeat = 1;
  ParallelFlags parallel;
};

StatusOr<Tensor> LoadInput(const std::string& path, int64_t hidden) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  const SafetensorsEntry* e = file->Find("hidden_states");
  if (e == nullptr) return NotFound("{}: no tensor 'hidden_states' (expected [n_tokens, {}])", path, hidden);
  if (e->shape.size() != 2 || e->shape[1] != hidden) {
    return InvalidArgument("{}: tensor 'hidden_states' has shape {}, expected [n_tokens, {}]", path,
                           ShapeToString(e->shape), hidden);
  }
  if (e->dtype != DType::kF32 && e->dtype != DType::kBF16 && e->dtype != DType::kF16) {
    return InvalidArgument("{}: tensor 'hidden_states' has dtype {}, expected F32, BF16 or F16", path,
                           DTypeName(e->dtype));
  }
  ASSIGN_OR_RETURN(Tensor x, file->Get("hidden_states"));
  ASSIGN_OR_RETURN(Tensor f, x.ToF32());
  RETURN_IF_ERROR(
      CheckRowsFinite(f.data<float>(), f.dim(0), hidden, fmt::format("{}: 'hidden_states'", path)));
  return f;
}

Status CheckOutput(const MoeConfig& config, const TensorSource& ckpt, const std::string& prefix,
                   const Tensor& x, const Tensor& y, const std::vector<int32_t>& ids, WeightFormat format) {
  ASSIGN_OR_RETURN(ReferenceMoeOutput ref, ReferenceMoe(config, ckpt, prefix, x));
  const double rtol = ReferenceTolerance(format);
  const MoeComparison cmp = CompareWithReference(ref, y.data<float>(), ids.data(), x.dim(0),
                                                 config.hidden_size, config.num_experts_per_tok, 1e-5, rtol);
  std::printf(
      "check: %s against the double-precision reference: max |diff| %.3g, max scaled error %.3f "
      "(rtol %.0e), routing mismatches %lld, near-ties skipped %lld, NaN/Inf %lld\n",
      cmp.ok ? "PASS" : "FAIL", cmp.max_abs_diff, cmp.max_scaled_err, rtol,
      static_cast<long long>(cmp.routing_mismatches), static_cast<long long>(cmp.near_ties),
      static_cast<long long>(cmp.non_finite));
  if (!cmp.ok) return Internal("check failed: {}", cmp.Failure(x.dim(0)));
  return Status::Ok();
}

Status WriteOutput(const std::string& path, const Tensor& y, const Routing& routing, int64_t k) {
  const int64_t tokens = y.dim(0);
  ASSIGN_OR_RETURN(Tensor ids, Tensor::Zeros(DType::kI32, {tokens, k}));
  ASSIGN_OR_RETURN(Tensor wts, Tensor::Zeros(DType::kF32, {tokens, k}));
  std::copy(routing.ids.begin(), routing.ids.end(), ids.data<int32_t>());
  std::copy(routing.weights.begin(), routing.weights.end(), wts.data<float>());
  return WriteSafetensors(path, {{"hidden_states", y}, {"topk_ids", ids}, {"topk_weights", wts}});
}

// Gathers the written rows of every rank onto every rank, in world-rank order (= token order).
template <typename T>
StatusOr<std::vector<T>> GatherOutputRows(Communicator& world, const T* rows, int64_t n, int64_t cols,
                                          bool writes) {
  const int64_t mine = writes ? n : 0;
  ASSIGN_OR_RETURN(std::vector<uint64_t> counts, world.AllGatherValue(static_cast<uint64_t>(mine)));
  std::vector<size_t> bytes;
  size_t total = 0;
  for (uint64_t c : counts) {
    bytes.push_back(c * static_cast<size_t>(cols) * sizeof(T));
    total += c * static_cast<size_t>(cols);
  }
  std::vector<T> all(total);
  RETURN_IF_ERROR(world.AllGather(rows, all.data(), bytes));
  return all;
}

// One code path for every layout: one rank is tp = dp = 1 (the local dispatcher, no collectives).
Status RunLayer(const MoeLayerArgs& a, const MoeConfig& config, std::optional<WeightFormat> format,
                const KernelPolicy& policy, const Tensor& x, const RankFingerprint& agree) {
  ASSIGN_OR_RETURN(ParallelOptions options, a.parallel.ToOptions());
  // Refuse bad layouts before any weight is read (under mpirun the world size is checked in Create).
  if (!StartedByMpirun()) RETURN_IF_ERROR(options.Validate(MoeLayoutDims(config), options.world()));
  const int threads = a.threads > 0 ? a.threads : DefaultThreadsPerProcess();
  const int64_t tokens = x.dim(0), h = config.hidden_size, k = config.num_experts_per_tok;
  return RunOnRanks(a.parallel, threads, agree, [&](Communicator& world, int rank_threads) -> Status {
    ThreadPool pool(rank_threads);
    auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(a.weights));
    if (a.check_tensors) RETURN_IF_ERROR(CheckFinite(*ckpt, a.prefix));
    ASSIGN_OR_RETURN(std::unique_ptr<ParallelMoe> moe,
                     ParallelMoe::Create(config, *ckpt, a.prefix, options, world, format, &pool, policy));
    const bool lead = world.rank() == 0;
    if (lead) {
      std::fprintf(stderr,
                   "moerun: %s\nmoerun: loaded %s%s on %d rank(s) (%s) in %.2f s (%s weights, %d threads per "
                   "rank, kernel %s at 1 row)\n",
                   config.Summary().c_str(), a.weights.c_str(),
                   a.prefix.empty() ? "" : (" @ " + a.prefix).c_str(), world.size(),
                   options.ToString().c_str(), SecondsSince(t0), WeightFormatName(moe->weights().format),
                   pool.size(), SelectKernel(moe->weights().format, 1, policy).name);
    }
    const auto [begin, end] = moe->TokenRange(tokens);
    const Tensor x_own = x.Rows(begin, end);
    Tensor y_own;
    Routing routing;
    double best = 1e30;
    for (int r = 0; r < a.repeat; ++r) {
      (void)world.log()->Take();
      RETURN_IF_ERROR(world.Barrier());
      t0 = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(y_own, moe->Forward(x_own, 0, &routing));
      const std::vector<CollectiveRecord> records = world.log()->Take();
      RETURN_IF_ERROR(world.Barrier());
      best = std::min(best, SecondsSince(t0));
      if (lead && a.parallel.stats) PrintStats(0, records);
    }
    ASSIGN_OR_RETURN(std::vector<float> y_all,
                     GatherOutputRows(world, y_own.data<float>(), end - begin, h, moe->WritesOutput()));
    ASSIGN_OR_RETURN(std::vector<int32_t> ids_all,
                     GatherOutputRows(world, routing.ids.data(), end - begin, k, moe->WritesOutput()));
    ASSIGN_OR_RETURN(std::vector<float> w_all,
                     GatherOutputRows(world, routing.weights.data(), end - begin, k, moe->WritesOutput()));
    if (!lead) return Status::Ok();
    if (static_cast<int64_t>(y_all.size()) != tokens * h) {
      return Internal("gathered {} output rows, expected {}", y_all.size() / static_cast<size_t>(h), tokens);
    }
    std::printf("moe-layer: %lld tokens in %.3f ms (%.1f tokens/s, best of %d) on %d ranks\n",
                static_cast<long long>(tokens), best * 1e3,
                best > 0 ? static_cast<double>(tokens) / best : 0.0, a.repeat, world.size());
    ASSIGN_OR_RETURN(Tensor y, Tensor::Zeros(DType::kF32, {tokens, h}));
    std::copy(y_all.begin(), y_all.end(), y.data<float>());
    Routing all{.tokens = tokens, .k = k, .ids = std::move(ids_all), .weights = std::move(w_all)};
    if (a.check) RETURN_IF_ERROR(CheckOutput(config, *ckpt, a.prefix, x, y, all.ids, moe->weights().format));
    RETURN_IF_ERROR(CheckRowsFinite(y.data<float>(), tokens, h, "moe-layer output"));
    RETURN_IF_ERROR(WriteOutput(a.output, y, all, k));
    std::fprintf(stderr, "moerun: wrote %s\n", a.output.c_str());
    return Status::Ok();
  });
}

// What every rank must share: the block's files, the input, and the flags that shape the run.
StatusOr<RankFingerprint> Fingerprint(const MoeLayerArgs& a, const std::string& config_path) {
  RankFingerprint fp;
  fp.Add("command", "moe-layer");
  RETURN_IF_ERROR(AddFileIdentity(&fp, "--config", config_path, FileDigest::kContent));
  RETURN_IF_ERROR(AddModelIdentity(&fp, a.weights, /*config_only=*/false));
  fp.Add("--prefix", a.prefix);
  RETURN_IF_ERROR(AddFileIdentity(&fp, "--input", a.input, FileDigest::kContent));
  a.kernels.AddFields(&fp);
  fp.Add("--check", a.check ? "on" : "off");
  fp.Add("--check-tensors", a.check_tensors ? "on" : "off");
  fp.Add("--repeat", std::to_string(a.repeat));
  return fp;
}

Status Run(const MoeLayerArgs& a) {
  std::string config_path = a.config;
  if (config_path.empty()) {
    if (!std::filesystem::is_directory(a.weights)) {
      return InvalidArgument("--config is required when --weights is a file ({})", a.weights);
    }
    config_path = (std::filesystem::path(a.weights) / "config.json").string();
  }
  ASSIGN_OR_RETURN(MoeConfig config, LoadMoeConfig(config_path));
  ASSIGN_OR_RETURN(std::optional<WeightFormat> format, a.kernels.Format());
  ASSIGN_OR_RETURN(KernelPolicy policy, a.kernels.Policy());
  if (a.repeat < 1) return InvalidArgument("--repeat {} must be >= 1", a.repeat);
  ASSIGN_OR_RETURN(Tensor x, LoadInput(a.input, config.hidden_size));
  ASSIGN_OR_RETURN(RankFingerprint agree, Fingerprint(a, config_path));
  return RunLayer(a, config, format, policy, x, agree);
}

}  // namespace

void RegisterMoeLayerCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MoeLayerArgs>();
  CLI::App* cmd = app.add_subcommand("moe-layer", "Run one MoE block on hidden states from a file");
  cmd->add_option("--config", args->config, "HF config.json (default: <weights dir>/config.json)");
  cmd->add_option("--weights,-m", args->weights, "Block .safetensors file or checkpoint directory")
      ->required();
  cmd->add_option("--prefix", args->prefix, "Name prefix of the block, e.g. model.layers.1.mlp.");
  cmd->add_option("--input,-i", args->input, "safetensors file with hidden_states [n_tokens, H]")->required();
  cmd->add_option("--output,-o", args->output, "Output safetensors (hidden_states, topk_ids, topk_weights)")
      ->required();
  cmd->add_option("-t,--threads", args->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  args->kernels.Add(cmd);
  cmd->add_flag("--check", args->check, "Compare with the double-precision reference; fail if it differs");
  cmd->add_flag("--check-tensors", args->check_tensors, "Scan the block's weights for NaN/Inf before use");
  cmd->add_option("--repeat", args->repeat, "Run the forward N times, report the best time");
  args->parallel.Add(cmd);
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
