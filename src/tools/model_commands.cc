// moerun logits / generate / inspect: whole DeepSeek-V2-family models from a checkpoint directory.
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <sstream>
#include <tuple>

#include "engine/sampler.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/deepseek_model.h"
#include "model/synthetic_model.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/parallel_flags.h"

#include <nlohmann/json.hpp>

namespace moerun {
namespace {

StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (end == item.c_str() || *end != '\0' || v < 0 || v > INT32_MAX) {
      return InvalidArgument("--tokens: '{}' is not a token id (a non-negative integer)", item);
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return InvalidArgument("--tokens is empty");
  return ids;
}

struct ModelArgs {
  ParallelFlags parallel;
  std::string model_dir;
  int threads = 0;
  std::string weight_dtype = "auto";
  std::string precision = "auto";
  bool check_tensors = false;
};

void AddModelOptions(CLI::App* cmd, ModelArgs* a) {
  // Default: the tiny trained model committed under models/ (the embedded default), or $MOERUN_MODEL.
  const char* env = std::getenv("MOERUN_MODEL");
  a->model_dir = env != nullptr ? env : MOERUN_DEFAULT_MODEL_DIR;
  cmd->add_option("-m,--model", a->model_dir, "Checkpoint directory (config.json + safetensors)")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  cmd->add_option("--weight-dtype", a->weight_dtype, "Packed weights: auto|bf16|f32");
  cmd->add_option("--precision", a->precision, "Activation rounding for bf16 weights: auto|f32|bf16");
  cmd->add_flag("--check-tensors", a->check_tensors, "Scan every tensor for NaN/Inf before use");
  a->parallel.Add(cmd);
}

StatusOr<std::unique_ptr<DeepseekModel>> LoadModel(const ModelArgs& a, ThreadPool* pool,
                                                   Communicator* world = nullptr) {
  ModelLoadOptions o;
  ASSIGN_OR_RETURN(o.parallel, a.parallel.ToOptions());
  ASSIGN_OR_RETURN(o.weight_dtype, ParseWeightDType(a.weight_dtype));
  ASSIGN_OR_RETURN(o.precision, ParsePrecision(a.precision));
  o.check_tensors = a.check_tensors;
  const auto t0 = std::chrono::steady_clock::now();
  const bool lead = world == nullptr || world->rank() == 0;
  auto progress = [lead](double f, const std::string& what) {
    if (!lead) return;
    std::fprintf(stderr, "\rmoerun: loading [%-30s] %3.0f%% %-12s",
                 std::string(static_cast<size_t>(f * 30), '#').c_str(), f * 100, what.c_str());
    if (f >= 1.0) std::fprintf(stderr, "\n");
  };
  ASSIGN_OR_RETURN(auto model, DeepseekModel::Load(a.model_dir, o, pool, progress, world));
  if (lead) {
    std::fprintf(stderr, "moerun: %s\nmoerun: loaded in %.2f s, %d ranks x %d threads (%s)\n",
                 model->config().Summary().c_str(), SecondsSince(t0), world ? world->size() : 1, pool->size(),
                 o.parallel.ToString().c_str());
  }
  return model;
}

// Runs body(world, model, owns_sequence) on every rank of the layout (one rank when no layout flag
// is given). The sequence belongs to DP replica 0; other replicas run every step with no tokens.
Status RunModelOnRanks(const ModelArgs& a,
                       const std::function<Status(Communicator&, DeepseekModel&, bool)>& body) {
  ASSIGN_OR_RETURN(ParallelOptions options, a.parallel.ToOptions());
  const int threads = a.threads > 0 ? a.threads : DefaultThreadsPerProcess();
  return RunOnRanks(options.world(), threads, [&](Communicator& world, int rank_threads) -> Status {
    ThreadPool pool(rank_threads);
    ASSIGN_OR_RETURN(auto model, LoadModel(a, &pool, &world));
    return body(world, *model, world.rank() / options.tp == 0);
  });
}

// ---- logits ----
struct LogitsArgs;
Status WriteLogits(const LogitsArgs& a, const DeepseekModel& model, const std::vector<int32_t>& ids,
                   const std::vector<float>& logits);

struct LogitsArgs {
  ModelArgs model;
  std::string tokens;
  std::string output;
  bool decode = false;  // one token per step through the KV cache instead of one prefill
};

Status RunLogits(const LogitsArgs& a) {
  ASSIGN_OR_RETURN(std::vector<int32_t> all_ids, ParseTokenList(a.tokens));
  return RunModelOnRanks(a.model, [&](Communicator& world, DeepseekModel& model, bool owns) -> Status {
    const std::vector<int32_t> ids = owns ? all_ids : std::vector<int32_t>{};
    KvCache cache(model.config(), static_cast<int64_t>(all_ids.size()));
    std::vector<float> logits;
    if (a.decode) {
      std::vector<float> step;
      for (size_t i = 0; i < all_ids.size(); ++i) {
        const std::span<const int32_t> one =
            owns ? std::span<const int32_t>(&ids[i], 1) : std::span<const int32_t>();
        RETURN_IF_ERROR(model.Forward(one, &cache, /*all_logits=*/false, &step));
        logits.insert(logits.end(), step.begin(), step.end());
      }
    } else {
      RETURN_IF_ERROR(model.Forward(ids, &cache, /*all_logits=*/true, &logits));
    }
    if (world.rank() != 0) return Status::Ok();
    return WriteLogits(a, model, all_ids, logits);
  });
}

Status WriteLogits(const LogitsArgs& a, const DeepseekModel& model, const std::vector<int32_t>& ids,
                   const std::vector<float>& logits) {
  const int64_t v = model.config().vocab_size;
  ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kF32, {static_cast<int64_t>(ids.size()), v}));
  std::copy(logits.begin(), logits.end(), t.data<float>());
  RETURN_IF_ERROR(WriteSafetensors(a.output, {{"logits", t}}));
  std::fprintf(stderr, "moerun: wrote logits [%zu, %lld] to %s\n", ids.size(), static_cast<long long>(v),
               a.output.c_str());
  return Status::Ok();
}

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
  if (!a.prompt.empty() || std::filesystem::exists(a.model.model_dir + "/tokenizer.json")) {
    ASSIGN_OR_RETURN(tok, Tokenizer::FromDirectory(a.model.model_dir));
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(a, tok.get()));
  const bool text_out = tok != nullptr && !a.print_ids;
  const int64_t ctx = a.context > 0 ? a.context : static_cast<int64_t>(prompt.size()) + a.n_predict;
  if (static_cast<int64_t>(prompt.size()) > ctx) {
    return InvalidArgument("the prompt has {} tokens, more than the context -c {}", prompt.size(), ctx);
  }
  return RunModelOnRanks(a.model, [&](Communicator& world, DeepseekModel& model, bool owns) -> Status {
    if (ctx > model.config().max_position_embeddings) {
      return InvalidArgument("context {} exceeds max_position_embeddings {}", ctx,
                             model.config().max_position_embeddings);
    }
    const bool lead = world.rank() == 0;
    KvCache cache(model.config(), ctx);
    Sampler sampler(a.sampling);
    std::vector<float> logits;
    auto t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(model.Forward(owns ? std::span<const int32_t>(prompt) : std::span<const int32_t>(),
                                  &cache, false, &logits));
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
      if (next == model.config().eos_token_id ||
          static_cast<int64_t>(prompt.size() + generated.size()) >= ctx || i + 1 == a.n_predict) {
        break;
      }
      RETURN_IF_ERROR(model.Forward(owns ? std::span<const int32_t>(&next, 1) : std::span<const int32_t>(),
                                    &cache, false, &logits));
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

// ---- eval ----
struct EvalArgs {
  ModelArgs model;
  std::string task;  // JSONL: {"prompt": "...", "answer": "..."} per line
  int batch = 32;
  int max_new = 16;
  std::string answers_out;  // optional: "index<TAB>answer" per problem
};

struct Problem {
  std::string prompt, answer;
};

StatusOr<std::vector<Problem>> ReadTask(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<Problem> out;
  size_t begin = 0, line_no = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    const std::string_view line = std::string_view(text).substr(begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j.contains("answer") ||
        !j["prompt"].is_string() || !j["answer"].is_string()) {
      return InvalidArgument("{}:{}: expected {{\"prompt\": string, \"answer\": string}}", path, line_no);
    }
    out.push_back({j["prompt"].get<std::string>(), j["answer"].get<std::string>()});
  }
  if (out.empty()) return InvalidArgument("{}: no problems", path);
  return out;
}

std::string Trim(std::string s) {
  const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

Status RunEval(const EvalArgs& a) {
  if (a.batch < 1 || a.max_new < 1) return InvalidArgument("--batch and --max-new must be >= 1");
  ASSIGN_OR_RETURN(std::vector<Problem> problems, ReadTask(a.task));
  ASSIGN_OR_RETURN(auto tok, Tokenizer::FromDirectory(a.model.model_dir));
  ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
  const int64_t n = static_cast<int64_t>(problems.size()), dp = par.dp;
  return RunModelOnRanks(a.model, [&](Communicator& world, DeepseekModel& model, bool) -> Status {
    const int replica = world.rank() / par.tp;
    const bool lead = world.rank() == 0, writer = world.rank() % par.tp == 0;
    std::vector<int64_t> mine;  // problems of this DP replica: i % dp == replica
    for (int64_t i = replica; i < n; i += dp) mine.push_back(i);
    const int64_t per_replica_max = (n + dp - 1) / dp, rounds = (per_replica_max + a.batch - 1) / a.batch;
    const int32_t eos = static_cast<int32_t>(model.config().eos_token_id);
    std::string results;  // "index\tanswer\n" for this replica's problems
    for (int64_t round = 0; round < rounds; ++round) {
      const int64_t lo = std::min<int64_t>(round * a.batch, static_cast<int64_t>(mine.size()));
      const int64_t hi = std::min<int64_t>(lo + a.batch, static_cast<int64_t>(mine.size()));
      std::vector<std::vector<int32_t>> prompt_ids, out_ids(static_cast<size_t>(hi - lo));
      std::vector<std::unique_ptr<KvCache>> caches;
      std::vector<DeepseekModel::SequenceChunk> chunks;
      for (int64_t k = lo; k < hi; ++k) prompt_ids.push_back(tok->Encode(problems[mine[k]].prompt, true));
      for (auto& ids : prompt_ids) {
        caches.push_back(std::make_unique<KvCache>(model.config(), static_cast<int64_t>(ids.size()) + a.max_new));
        chunks.push_back({caches.back().get(), ids});
      }
      std::vector<float> logits;
      RETURN_IF_ERROR(model.ForwardBatch(chunks, false, &logits));
      std::vector<char> active(static_cast<size_t>(hi - lo), 1);
      std::vector<int32_t> next(static_cast<size_t>(hi - lo));
      const int64_t v = model.config().vocab_size;
      // Every rank takes max_new steps (idle replicas with empty batches) so collectives line up.
      for (int step = 0; step < a.max_new; ++step) {
        std::vector<DeepseekModel::SequenceChunk> step_chunks;
        int64_t row = 0;
        for (size_t s = 0; s < active.size(); ++s) {
          if (!active[s]) continue;
          const float* lg = logits.data() + row++ * v;
          int32_t best = 0;
          for (int64_t i = 1; i < v; ++i)
            if (lg[i] > lg[best]) best = static_cast<int32_t>(i);
          if (best == eos || step + 1 == a.max_new) {
            active[s] = 0;
            if (best != eos) out_ids[s].push_back(best);
            continue;
          }
          out_ids[s].push_back(best);
          next[s] = best;
          step_chunks.push_back({caches[s].get(), std::span<const int32_t>(&next[s], 1)});
        }
        if (step + 1 < a.max_new) RETURN_IF_ERROR(model.ForwardBatch(step_chunks, false, &logits));
      }
      for (int64_t k = lo; k < hi; ++k) {
        auto text = tok->Decode(out_ids[static_cast<size_t>(k - lo)], /*skip_special_tokens=*/true);
        std::string answer = text.ok() ? *text : std::string("<undecodable>");
        for (char& ch : answer)
          if (ch == '\n' || ch == '\t') ch = ' ';
        results += fmt::format("{}\t{}\n", mine[k], answer);
      }
      if (lead) {
        const double f = static_cast<double>(round + 1) / static_cast<double>(rounds);
        std::fprintf(stderr, "\reval [%-30s] %3.0f%%", std::string(static_cast<size_t>(f * 30), '#').c_str(), f * 100);
        if (round + 1 == rounds) std::fprintf(stderr, "\n");
      }
    }
    // Gather every replica's answers (from its TP rank 0) on rank 0.
    const std::string send = writer ? results : std::string();
    ASSIGN_OR_RETURN(std::vector<uint64_t> sizes, world.AllGatherValue(send.size()));
    std::vector<size_t> bytes(sizes.begin(), sizes.end());
    size_t total = 0;
    for (size_t b : bytes) total += b;
    std::string all(total, '\0');
    RETURN_IF_ERROR(world.AllGather(send.data(), all.data(), bytes));
    if (!lead) return Status::Ok();
    std::vector<std::string> answers(static_cast<size_t>(n));
    size_t pos = 0;
    while (pos < all.size()) {
      const size_t tab = all.find('\t', pos), nl = all.find('\n', tab);
      answers[std::stoull(all.substr(pos, tab - pos))] = all.substr(tab + 1, nl - tab - 1);
      pos = nl + 1;
    }
    int64_t correct = 0;
    std::string listing;
    for (int64_t i = 0; i < n; ++i) {
      correct += Trim(answers[i]) == Trim(problems[i].answer);
      listing += fmt::format("{}\t{}\n", i, answers[i]);
    }
    if (!a.answers_out.empty()) RETURN_IF_ERROR(WriteFileAtomically(a.answers_out, listing));
    std::printf("accuracy: %.3f (%lld/%lld)\n", static_cast<double>(correct) / static_cast<double>(n),
                static_cast<long long>(correct), static_cast<long long>(n));
    return Status::Ok();
  });
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
  ASSIGN_OR_RETURN(auto tok, Tokenizer::FromDirectory(a.model_dir));
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

Status RunBench(const BenchArgs& a) {
  if (a.n_prompt < 0 || a.n_gen < 0 || a.reps < 1) return InvalidArgument("-p, -n must be >= 0 and -r >= 1");
  if (a.output != "md" && a.output != "json") return InvalidArgument("-o '{}' is not md or json", a.output);
  return RunModelOnRanks(a.model, [&](Communicator& world, DeepseekModel& model, bool owns) -> Status {
    const ModelConfig& c = model.config();
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int32_t> tok(2, static_cast<int32_t>(c.vocab_size - 1));
    std::vector<int32_t> prompt(static_cast<size_t>(a.n_prompt));
    for (int32_t& t : prompt) t = tok(rng);
    std::vector<double> pp, tg;
    std::vector<float> logits;
    for (int rep = 0; rep < a.reps + 1; ++rep) {  // rep 0 warms up
      if (a.n_prompt > 0) {
        KvCache cache(c, a.n_prompt);
        RETURN_IF_ERROR(world.Barrier());
        const auto t0 = std::chrono::steady_clock::now();
        RETURN_IF_ERROR(model.Forward(owns ? std::span<const int32_t>(prompt) : std::span<const int32_t>(),
                                      &cache, false, &logits));
        RETURN_IF_ERROR(world.Barrier());
        if (rep > 0) pp.push_back(a.n_prompt / SecondsSince(t0));
      }
      if (a.n_gen > 0) {
        KvCache cache(c, a.n_gen);
        int32_t next = 2;
        RETURN_IF_ERROR(world.Barrier());
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < a.n_gen; ++i) {
          RETURN_IF_ERROR(
              model.Forward(owns ? std::span<const int32_t>(&next, 1) : std::span<const int32_t>(), &cache,
                            false, &logits));
          next = tok(rng);
        }
        RETURN_IF_ERROR(world.Barrier());
        if (rep > 0) tg.push_back(a.n_gen / SecondsSince(t0));
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
    return Status::Ok();
  });
}

// ---- inspect ----
Status RunInspect(const ModelArgs& a) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(a.model_dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromJson(text, a.model_dir + "/config.json"));
  std::printf("config: %s\n", c.Summary().c_str());
  ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(a.model_dir));
  uint64_t params = 0, bytes = 0;
  std::printf("| tensor | dtype | shape |\n|---|---|---|\n");
  for (const std::string& name : ckpt->Names()) {
    const SafetensorsEntry* e = ckpt->Find(name);
    std::printf("| %s | %s | %s |\n", name.c_str(), std::string(DTypeName(e->dtype)).c_str(),
                ShapeToString(e->shape).c_str());
    uint64_t n = 1;
    for (int64_t d : e->shape) n *= static_cast<uint64_t>(d);
    params += n;
    bytes += e->end - e->begin;
  }
  std::printf("tensors: %zu, parameters: %llu, bytes: %llu\n", ckpt->Names().size(),
              static_cast<unsigned long long>(params), static_cast<unsigned long long>(bytes));
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadCount());
  const Status s = LoadModel(a, &pool).status();
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
  gc->add_flag("--print-ids", gen->print_ids, "Print generated token ids, comma-separated, instead of text");
  gc->callback([gen, exit_code] {
    const Status s = RunGenerate(*gen);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });

  auto ev = std::make_shared<EvalArgs>();
  CLI::App* ec = app.add_subcommand("eval", "Exact-match accuracy on a JSONL task with batched greedy decoding");
  AddModelOptions(ec, &ev->model);
  ec->add_option("--task", ev->task, "JSONL file: {\"prompt\": ..., \"answer\": ...} per line")->required();
  ec->add_option("--batch", ev->batch, "Sequences decoded together per DP replica");
  ec->add_option("--max-new", ev->max_new, "Generated tokens per problem at most");
  ec->add_option("--answers", ev->answers_out, "Write 'index<TAB>answer' per problem to this file");
  ec->callback([ev, exit_code] {
    const Status s = RunEval(*ev);
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
  bc->add_option("-p,--n-prompt", bench->n_prompt, "Prompt tokens for pp");
  bc->add_option("-n,--n-gen", bench->n_gen, "Generated tokens for tg");
  bc->add_option("-r,--repetitions", bench->reps, "Repetitions (mean ± sd)");
  bc->add_option("-o,--output", bench->output, "md|json");
  bc->callback([bench, exit_code] {
    const Status s = RunBench(*bench);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });

  auto make = std::make_shared<std::tuple<std::string, int64_t, uint64_t, int>>("", 4, 1, 0);
  CLI::App* mc =
      app.add_subcommand("make-model", "Write a DeepSeek-V2-Lite-shaped random bf16 model (for bench)");
  mc->add_option("--out,-o", std::get<0>(*make), "Output directory")->required();
  mc->add_option("--layers", std::get<1>(*make), "Layers (layer 0 dense, the rest MoE)");
  mc->add_option("--seed", std::get<2>(*make), "Random seed");
  mc->add_option("-t,--threads", std::get<3>(*make), "Threads");
  mc->callback([make, exit_code] {
    ThreadPool pool(std::get<3>(*make) > 0 ? std::get<3>(*make) : DefaultThreadCount());
    const Status s = WriteSyntheticV2Lite(std::get<0>(*make), std::get<1>(*make), std::get<2>(*make), &pool);
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
