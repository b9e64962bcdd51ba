// moerun eval: exact-match accuracy on a JSONL task with batched greedy decoding, on any layout.
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
#include "model/model.h"
#include "model/synthetic_model.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

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
  ASSIGN_OR_RETURN(auto tok, LoadTokenizer(a.model.model_dir));
  ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
  const int64_t n = static_cast<int64_t>(problems.size()), dp = par.dp;
  return RunModelOnRanks(a.model, [&](Communicator& world, Model& model, bool) -> Status {
    const int replica = world.rank() / par.tp;
    const bool lead = world.rank() == 0, writer = world.rank() % par.tp == 0;
    std::vector<int64_t> mine;  // problems of this DP replica: i % dp == replica
    for (int64_t i = replica; i < n; i += dp) mine.push_back(i);
    const int64_t per_replica_max = (n + dp - 1) / dp, rounds = (per_replica_max + a.batch - 1) / a.batch;
    const int32_t eos = static_cast<int32_t>(model.hparams().eos_token_id);
    std::string results;  // "index\tanswer\n" for this replica's problems
    for (int64_t round = 0; round < rounds; ++round) {
      const int64_t lo = std::min<int64_t>(round * a.batch, static_cast<int64_t>(mine.size()));
      const int64_t hi = std::min<int64_t>(lo + a.batch, static_cast<int64_t>(mine.size()));
      std::vector<std::vector<int32_t>> prompt_ids, out_ids(static_cast<size_t>(hi - lo));
      std::vector<std::unique_ptr<ModelCache>> caches;
      std::vector<Model::SequenceChunk> chunks;
      for (int64_t k = lo; k < hi; ++k) prompt_ids.push_back(tok->Encode(problems[mine[k]].prompt, true));
      for (auto& ids : prompt_ids) {
        caches.push_back(model.NewCache(static_cast<int64_t>(ids.size()) + a.max_new));
        chunks.push_back({caches.back().get(), ids});
      }
      std::vector<float> logits;
      RETURN_IF_ERROR(model.ForwardBatch(chunks, false, &logits));
      std::vector<char> active(static_cast<size_t>(hi - lo), 1);
      std::vector<int32_t> next(static_cast<size_t>(hi - lo));
      const int64_t v = model.hparams().vocab_size;
      // Every rank takes max_new steps (idle replicas with empty batches) so collectives line up.
      for (int step = 0; step < a.max_new; ++step) {
        std::vector<Model::SequenceChunk> step_chunks;
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
        std::fprintf(stderr, "\reval [%-30s] %3.0f%%", std::string(static_cast<size_t>(f * 30), '#').c_str(),
                     f * 100);
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

}  // namespace

void RegisterEvalCommand(CLI::App& app, int* exit_code) {
  auto ev = std::make_shared<EvalArgs>();
  CLI::App* ec =
      app.add_subcommand("eval", "Exact-match accuracy on a JSONL task with batched greedy decoding");
  AddModelOptions(ec, &ev->model);
  ec->add_option("--task", ev->task, "JSONL file: {\"prompt\": ..., \"answer\": ...} per line")->required();
  ec->add_option("--batch", ev->batch, "Sequences decoded together per DP replica");
  ec->add_option("--max-new", ev->max_new, "Generated tokens per problem at most");
  ec->add_option("--answers", ev->answers_out, "Write 'index<TAB>answer' per problem to this file");
  ec->callback([ev, exit_code] {
    const Status s = RunEval(*ev);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
