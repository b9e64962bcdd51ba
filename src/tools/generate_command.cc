// moerun generate: text or token ids in, streamed tokens out (greedy or sampled), on any layout.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <tuple>

#include "engine/sampler.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/synthetic_model.h"
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
  std::string prompt;  // text, encoded with the model directory's tokenizer.json
  bool chat = false;   // wrap the prompt as one user turn of the model's chat format
  int n_predict = 32;
  int64_t context = 0;  // 0: prompt + n
  SamplingParams sampling;
  bool print_ids = false;
  bool ignore_eos = false;  // generate exactly -n tokens (benchmarks, comparisons)
};

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence.
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t n = s.size(), i = n;
  for (int back = 0; back < 4 && i > 0; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII) at i - 1
      const size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
      return n - (i - 1) >= need ? n : i - 1;
    }
    --i;
  }
  return n;
}

// The prompt's token ids: --tokens as given, or -p text through the tokenizer (optionally as a
// chat turn).
StatusOr<std::vector<int32_t>> PromptIds(const GenerateArgs& a, const Tokenizer* tok) {
  if (!a.tokens.empty()) return ParseTokenList(a.tokens);
  if (tok == nullptr) return InvalidArgument("-p needs tokenizer.json in {}", a.model.model_dir);
  if (!a.chat) return tok->Encode(a.prompt, /*add_special_tokens=*/true);
  const std::vector<ChatMessage> messages = {{"user", a.prompt}};
  std::string text;
  if (tok->chat_template().empty()) {
    ASSIGN_OR_RETURN(text, RenderDeepSeekV2Chat(messages, tok->bos_token(), tok->eos_token(), true));
  } else {
    ASSIGN_OR_RETURN(text, tok->ApplyChatTemplate(messages, true));
  }
  return tok->Encode(text, /*add_special_tokens=*/false);
}

Status RunGenerate(const GenerateArgs& a) {
  RETURN_IF_ERROR(a.sampling.Validate());
  if (a.n_predict < 0) return InvalidArgument("-n {} must be >= 0", a.n_predict);
  if (a.tokens.empty() == a.prompt.empty())
    return InvalidArgument("give exactly one of -p TEXT or --tokens IDS");
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
  return RunModelOnRanks(a.model, [&](Communicator& world, Model& model, bool owns) -> Status {
    if (ctx > model.hparams().max_position_embeddings) {
      return InvalidArgument("context {} exceeds max_position_embeddings {}", ctx,
                             model.hparams().max_position_embeddings);
    }
    const bool lead = world.rank() == 0;
    std::unique_ptr<ModelCache> cache = model.NewCache(ctx);
    Sampler sampler(a.sampling);
    std::vector<float> logits;
    auto t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(model.Forward(owns ? std::span<const int32_t>(prompt) : std::span<const int32_t>(),
                                  cache.get(), false, &logits));
    const double prompt_s = SecondsSince(t0);
    std::vector<int32_t> generated, shown;  // shown: the generated ids that have text
    size_t printed = 0;                     // bytes of decoded text already written
    int64_t textless = 0;                   // generated ids the tokenizer has no text for
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < a.n_predict; ++i) {
      // Rank 0 samples; every rank learns the token (or -1: stop) so all take the same steps.
      int32_t next = lead ? sampler.Sample(logits) : 0;
      RETURN_IF_ERROR(world.Broadcast(&next, sizeof next, 0));
      generated.push_back(next);
      if (lead && text_out) {
        // Stream text, holding back a UTF-8 sequence until it is complete.
        if (tok->TokenToPiece(next).ok() || tok->IsSpecial(next)) {
          shown.push_back(next);
        } else {
          ++textless;
        }
        ASSIGN_OR_RETURN(std::string bytes, tok->DecodeBytes(shown, /*skip_special_tokens=*/true));
        const size_t upto = CompleteUtf8Prefix(bytes);
        if (upto > printed) std::fwrite(bytes.data() + printed, 1, upto - printed, stdout);
        printed = std::max(printed, upto);
        std::fflush(stdout);
      } else if (lead) {
        std::printf("%s%d", generated.size() > 1 ? "," : "", next);
        std::fflush(stdout);
      }
      if ((next == model.hparams().eos_token_id && !a.ignore_eos) ||
          static_cast<int64_t>(prompt.size() + generated.size()) >= ctx || i + 1 == a.n_predict) {
        break;
      }
      RETURN_IF_ERROR(model.Forward(owns ? std::span<const int32_t>(&next, 1) : std::span<const int32_t>(),
                                    cache.get(), false, &logits));
    }
    const double gen_s = SecondsSince(t0);
    if (!lead) return Status::Ok();
    std::printf("\n");
    if (textless > 0)
      std::fprintf(stderr, "moerun: %lld generated ids have no text in the tokenizer\n",
                   static_cast<long long>(textless));
    std::fprintf(
        stderr,
        "moerun: prompt %zu tokens in %.3f s (%.1f tok/s), generated %zu tokens in %.3f s (%.1f tok/s)\n",
        prompt.size(), prompt_s, static_cast<double>(prompt.size()) / std::max(prompt_s, 1e-9),
        generated.size(), gen_s, static_cast<double>(generated.size()) / std::max(gen_s, 1e-9));
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
  gc->add_option("-n,--n-predict", gen->n_predict, "Tokens to generate");
  gc->add_option("-c,--ctx-size", gen->context, "Context size (default: prompt + n)");
  gc->add_option("--temp", gen->sampling.temperature, "Temperature (0 = greedy)");
  gc->add_option("--top-k", gen->sampling.top_k, "Top-k (0 = off)");
  gc->add_option("--top-p", gen->sampling.top_p, "Top-p (1 = off)");
  gc->add_option("--seed", gen->sampling.seed, "Sampling seed");
  gc->add_flag("--ignore-eos", gen->ignore_eos, "Do not stop at the end-of-sequence token");
  gc->add_flag("--print-ids", gen->print_ids, "Print generated token ids, comma-separated, instead of text");
  gc->callback([gen, exit_code] {
    const Status s = RunGenerate(*gen);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
