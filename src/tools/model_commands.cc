// moerun logits / tokenize / inspect: whole models of any registered architecture.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/engine.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
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

  auto inspect = std::make_shared<ModelArgs>();
  CLI::App* ic = app.add_subcommand("inspect", "Config summary, tensor table and validation result");
  AddModelOptions(ic, inspect.get());
  ic->callback([inspect, exit_code] {
    const Status s = RunInspect(*inspect);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
