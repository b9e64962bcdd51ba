// moerun generate: text or token ids in, streamed tokens out (greedy or sampled), on any layout.
#include <chrono>
#include <cstdio>

#include "engine/engine.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

// ---- generate ----
struct GenerateArgs {
  ModelArgs model;
  std::string tokens;
  std::string prompt;                // text, encoded with the model directory's tokenizer.json
  bool chat = false;                 // wrap the prompt as one user turn of the model's chat format
  std::string chat_template_kwargs;  // --chat: JSON template variables, e.g. {"enable_thinking": false}
  int n_predict = 32;
  int64_t context = 0;  // 0: prompt + n
  SamplingParams sampling;
  bool print_ids = false;
  bool ignore_eos = false;  // generate exactly -n tokens (benchmarks, comparisons)
};

// The prompt's token ids: --tokens as given, or -p text through the tokenizer (optionally as a
// chat turn).
StatusOr<std::vector<int32_t>> PromptIds(const GenerateArgs& a, const Tokenizer* tok) {
  if (!a.tokens.empty()) return ParseTokenList(a.tokens);
  if (tok == nullptr) return InvalidArgument("-p needs tokenizer.json in {}", a.model.model_dir);
  if (!a.chat) return tok->Encode(a.prompt, /*add_special_tokens=*/true);
  const std::vector<ChatMessage> messages = {{"user", a.prompt}};
  ChatTemplateKwargs kwargs;
  if (!a.chat_template_kwargs.empty()) {
    ASSIGN_OR_RETURN(kwargs, ParseChatTemplateKwargsText(a.chat_template_kwargs, "--chat-template-kwargs"));
  }
  std::string text;
  if (tok->chat_template().empty()) {
    ASSIGN_OR_RETURN(text, RenderDeepSeekV2Chat(messages, tok->bos_token(), tok->eos_token(), true));
  } else {
    ASSIGN_OR_RETURN(text, tok->ApplyChatTemplate(messages, true, kwargs.enable_thinking));
  }
  return tok->Encode(text, /*add_special_tokens=*/false);
}

Status RunGenerate(const GenerateArgs& a) {
  RETURN_IF_ERROR(a.sampling.Validate());
  if (a.n_predict < 0) return InvalidArgument("-n {} must be >= 0", a.n_predict);
  if (a.tokens.empty() == a.prompt.empty())
    return InvalidArgument("give exactly one of -p TEXT or --tokens IDS");
  if (!a.chat_template_kwargs.empty() && !a.chat)
    return InvalidArgument("--chat-template-kwargs applies to --chat prompts only");
  std::unique_ptr<Tokenizer> tok;
  if (!a.prompt.empty() || HasTokenizer(a.model.model_dir)) {
    ASSIGN_OR_RETURN(tok, LoadTokenizer(a.model.model_dir));
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(a, tok.get()));
  const bool text_out = tok != nullptr && !a.print_ids;
  const int64_t ctx = a.context > 0 ? a.context : static_cast<int64_t>(prompt.size()) + a.n_predict;
  if (static_cast<int64_t>(prompt.size()) > ctx) {
    return InvalidArgument("the prompt has {} tokens, more than the context -c {}", prompt.size(), ctx);
  }
  ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
  ModelArgs model_args = a.model;
  model_args.kv_tokens = ctx;
  ASSIGN_OR_RETURN(RankFingerprint agree, ModelFingerprint(a.model, "generate"));
  agree.Add("prompt (-p / --tokens)", IdsField(prompt));
  agree.Add("-n", std::to_string(a.n_predict));
  agree.Add("-c", std::to_string(ctx));
  agree.Add("--temp", fmt::format("{}", a.sampling.temperature));
  agree.Add("--top-k", std::to_string(a.sampling.top_k));
  agree.Add("--top-p", fmt::format("{}", a.sampling.top_p));
  agree.Add("--seed", std::to_string(a.sampling.seed));
  agree.Add("--ignore-eos", a.ignore_eos ? "on" : "off");
  agree.Add("text output", text_out ? "on" : "off");  // the engine detokenizes on every rank then
  return RunModelOnRanks(model_args, agree, [&](Communicator& world, Model& model, bool) -> Status {
    if (ctx > model.hparams().max_position_embeddings) {  // on every rank: none waits for a step
      return InvalidArgument("context {} exceeds max_position_embeddings {}", ctx,
                             model.hparams().max_position_embeddings);
    }
    Engine engine(world, model, text_out ? tok.get() : nullptr, EngineOptions{.tp = par.tp});
    if (world.rank() != 0) return engine.RunUntilIdle();
    Request r;
    r.prompt = prompt;
    r.sampling = a.sampling;
    r.max_tokens = a.n_predict;
    r.context = ctx;
    if (!a.ignore_eos) r.stop_ids = {static_cast<int32_t>(model.hparams().eos_token_id)};
    int64_t generated = 0, textless = 0;
    auto t0 = std::chrono::steady_clock::now(), t_first = t0;
    r.on_token = [&](const TokenEvent& e) {
      if (generated++ == 0) t_first = std::chrono::steady_clock::now();
      if (text_out) {
        std::fwrite(e.text.data(), 1, e.text.size(), stdout);
      } else {
        std::printf("%s%d", generated > 1 ? "," : "", e.token);
      }
      std::fflush(stdout);
    };
    r.on_finish = [&](const Sequence& s) { textless = s.textless(); };
    StatusOr<uint64_t> id = engine.Submit(std::move(r));
    if (!id.ok()) return engine.Abort(id.status());
    RETURN_IF_ERROR(engine.RunUntilIdle());
    const double prompt_s =
        generated > 0 ? std::chrono::duration<double>(t_first - t0).count() : SecondsSince(t0);
    const double gen_s = generated > 0 ? SecondsSince(t_first) : 0.0;
    std::printf("\n");
    if (textless > 0)
      std::fprintf(stderr, "moerun: %lld generated ids have no text in the tokenizer\n",
                   static_cast<long long>(textless));
    std::fprintf(
        stderr,
        "moerun: prompt %zu tokens in %.3f s (%.1f tok/s), generated %lld tokens in %.3f s (%.1f tok/s)\n",
        prompt.size(), prompt_s, static_cast<double>(prompt.size()) / std::max(prompt_s, 1e-9),
        static_cast<long long>(generated), gen_s, static_cast<double>(generated) / std::max(gen_s, 1e-9));
    return Status::Ok();
  });
}

}  // namespace

void RegisterGenerateCommand(CLI::App& app, int* exit_code) {
  auto gen = std::make_shared<GenerateArgs>();
  CLI::App* gc = app.add_subcommand("generate", "Generate tokens from a prompt");
  AddModelOptions(gc, &gen->model);
  gc->add_option("-p,--prompt", gen->prompt, "Prompt text (needs tokenizer.json in the model directory)");
  gc->add_option("--tokens", gen->tokens, "Prompt token ids, comma-separated");
  gc->add_flag("--chat", gen->chat, "Send the prompt as a user turn of the model's chat format");
  gc->add_option("--chat-template-kwargs", gen->chat_template_kwargs,
                 "With --chat: template variables as JSON, e.g. '{\"enable_thinking\": false}'");
  gc->add_option("-n,--n-predict", gen->n_predict, "Tokens to generate")->check(AtLeast(0));
  gc->add_option("-c,--ctx-size", gen->context, "Context size (default: prompt + n)")->check(AtLeast(0));
  gc->add_option("--temp", gen->sampling.temperature, "Temperature (0 = greedy)");
  gc->add_option("--top-k", gen->sampling.top_k, "Top-k (0 = off)")->check(AtLeast(0));
  gc->add_option("--top-p", gen->sampling.top_p, "Top-p (1 = off)");
  // A signed read first: CLI11 would wrap -1 into a uint64_t seed.
  gc->add_option("--seed", gen->sampling.seed, "Sampling seed (>= 0)")->check(AtLeast(0));
  gc->add_flag("--ignore-eos", gen->ignore_eos, "Do not stop at the end-of-sequence token");
  gc->add_flag("--print-ids", gen->print_ids, "Print generated token ids, comma-separated, instead of text");
  gc->callback([gen, exit_code] {
    const Status s = RunGenerate(*gen);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
