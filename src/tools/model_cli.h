// Shared pieces of the whole-model subcommands (generate, eval, logits, bench, inspect): the model
// options, loading with a progress bar, and running a body on every rank of a layout.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/rank_agreement.h"
#include "core/thread_pool.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tools/kernel_flags.h"
#include "tools/parallel_flags.h"

namespace moerun {

// "1,2,3" -> ids; errors name the bad item.
StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& s);

struct ModelArgs {
  ParallelFlags parallel;
  std::string model_dir;  // default: models/tiny-arith (or $MOERUN_MODEL)
  int threads = 0;        // 0 = all CPUs (divided among MPI ranks on this host)
  KernelFlags kernels;
  bool check_tensors = false;
  std::string load_format = "auto";  // or "dummy": random weights of config.json's shapes
  uint64_t max_memory = 0;           // --max-memory bytes; 0 = no budget
  // Set by the command before loading, for the --max-memory estimate: positions cached at once
  // over all sequences, and rows of logits held until written.
  int64_t kv_tokens = 0;
  int64_t logit_rows = 0;
};

void AddModelOptions(CLI::App* cmd, ModelArgs* a);
// True if -m names a llama.cpp GGUF file (by its .gguf suffix) rather than an HF directory.
bool IsGgufPath(const std::string& model);
// The tokenizer of -m: <dir>/tokenizer.json (+ tokenizer_config.json), or a GGUF's tokenizer.ggml.*.
StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model);
// Whether -m has a tokenizer at all.
bool HasTokenizer(const std::string& model);

// `inspect -m FILE.gguf` (tools/gguf_command.cc): the header, every key/value and tensor info, then
// the config and the model validation.
Status InspectGguf(const ModelArgs& a);
// inspect's memory lines: the weights as held (`weights_bytes`, the sum of the tensor table's memory
// column) and the KV cache per token and at the model's context length, e.g.
// "memory: weights 8.85 GB as held; KV cache 0.06 MB per token, 10.4 GB at 163840 tokens".
void PrintMemorySummary(const ModelConfig& config, double weights_bytes);

// Any registered architecture (model/arch.h), from -m (directory, .gguf) or --load-format dummy.
// `on_progress` (rank 0) sees the load progress besides the progress bar on stderr.
StatusOr<std::unique_ptr<Model>> LoadModel(const ModelArgs& a, ThreadPool* pool,
                                           Communicator* world = nullptr,
                                           const LoadProgress& on_progress = {});

// What every rank of a model command must share (comm/rank_agreement.h): the command, the model's
// files (tools/file_identity.h), --load-format, --check-tensors and the kernel flags (the layout
// flags are added by RunOnRanks). Commands add their own fields (prompt ids, -n, task, ...).
StatusOr<RankFingerprint> ModelFingerprint(const ModelArgs& a, const std::string& command);
// Token ids as one fingerprint value: "1,2,3", or a digest when long.
std::string IdsField(std::span<const int32_t> ids);

// Runs body(world, model, owns_sequence) on every rank of the layout (one rank when no layout flag
// is given), after every rank agreed on `agree` (RunOnRanks). DP replica 0 owns a single sequence;
// other replicas run every step with no tokens.
Status RunModelOnRanks(const ModelArgs& a, const RankFingerprint& agree,
                       const std::function<Status(Communicator&, Model&, bool)>& body);

}  // namespace moerun
