// moerun eval: exact-match accuracy on a JSONL task with batched greedy decoding, on any layout.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>

#include "comm/mpi_comm.h"
#include "core/signals.h"
#include "engine/engine.h"
#include "io/atomic_file.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/file_identity.h"
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

// The answers listing ("index<TAB>answer", answered problems only) and the accuracy line.
// --answers: "index<TAB>answer" for every problem answered so far.
Status WriteAnswers(const EvalArgs& a, const std::vector<std::optional<std::string>>& answers) {
  if (a.answers_out.empty()) return Status::Ok();
  std::string listing;
  for (size_t i = 0; i < answers.size(); ++i) {
    if (answers[i]) listing += fmt::format("{}\t{}\n", i, *answers[i]);
  }
  return WriteFileAtomically(a.answers_out, listing);
}

Status Report(const EvalArgs& a, const std::vector<Problem>& problems,
              const std::vector<std::optional<std::string>>& answers) {
  const int64_t n = static_cast<int64_t>(problems.size());
  int64_t correct = 0, answered = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!answers[i]) continue;
    ++answered;
    correct += Trim(*answers[i]) == Trim(problems[i].answer);
  }
  RETURN_IF_ERROR(WriteAnswers(a, answers));
  if (answered < n) {
    std::printf("accuracy: %.3f (%lld/%lld answered of %lld; interrupted)\n",
                answered ? static_cast<double>(correct) / static_cast<double>(answered) : 0.0,
                static_cast<long long>(correct), static_cast<long long>(answered), static_cast<long long>(n));
    return IOError("interrupted (signal {}): {} of {} problems answered{}", InterruptScope::Received(),
                   answered, n,
                   a.answers_out.empty() ? "" : fmt::format("; partial answers in {}", a.answers_out));
  }
  std::printf("accuracy: %.3f (%lld/%lld)\n", static_cast<double>(correct) / static_cast<double>(n),
              static_cast<long long>(correct), static_cast<long long>(n));
  return Status::Ok();
}

Status RunEval(const EvalArgs& a) {
  ASSIGN_OR_RETURN(std::vector<Problem> problems, ReadTask(a.task));
  if (!a.answers_out.empty()) RETURN_IF_ERROR(CheckWritable(a.answers_out));  // before any computing
  ASSIGN_OR_RETURN(auto tok, LoadTokenizer(a.model.model_dir));
  ASSIGN_OR_RETURN(ParallelOptions par, a.model.parallel.ToOptions());
  const int64_t n = static_cast<int64_t>(problems.size());
  std::vector<std::vector<int32_t>> prompts;
  size_t longest = 0;
  for (const Problem& p : problems) {
    prompts.push_back(tok->Encode(p.prompt, true));
    longest = std::max(longest, prompts.back().size());
  }
  ModelArgs model_args = a.model;  // --max-memory: every replica's batch at its longest
  model_args.kv_tokens =
      std::min<int64_t>(n, int64_t{a.batch} * par.dp) * static_cast<int64_t>(longest + a.max_new);
  ASSIGN_OR_RETURN(RankFingerprint agree, ModelFingerprint(a.model, "eval"));
  RETURN_IF_ERROR(AddFileIdentity(&agree, "--task", a.task, FileDigest::kContent));
  agree.Add("--batch", std::to_string(a.batch));
  agree.Add("--max-new", std::to_string(a.max_new));
  return RunModelOnRanks(model_args, agree, [&](Communicator& world, Model& model, bool) -> Status {
    // Problem i runs on DP replica i % dp, in rounds of --batch per replica (admit_when_idle), so
    // every step batches the same sequences on every layout.
    Engine engine(world, model, tok.get(),
                  EngineOptions{.tp = par.tp, .max_batch = a.batch, .admit_when_idle = true});
    // SIGINT / SIGTERM: rank 0 writes what is answered and cancels the rest; under mpirun (which
    // sends every rank SIGTERM, and SIGKILL about a second later) the other ranks keep following
    // rank 0's plan to the end instead of dying at the first signal.
    if (world.rank() != 0) {
      std::optional<InterruptScope> follow;
      if (StartedByMpirun()) follow.emplace();
      return engine.RunUntilIdle();
    }
    const InterruptScope interrupt;
    const int32_t eos = static_cast<int32_t>(model.hparams().eos_token_id);
    std::vector<std::optional<std::string>> answers(static_cast<size_t>(n));
    int64_t done = 0;
    for (int64_t i = 0; i < n; ++i) {
      Request r;
      r.prompt = prompts[static_cast<size_t>(i)];
      r.max_tokens = a.max_new;
      r.stop_ids = {eos};
      r.on_finish = [&, i](const Sequence& s) {
        if (s.finish_reason() == FinishReason::kCancelled) return;
        std::span<const int32_t> ids = s.generated();
        if (s.finish_reason() == FinishReason::kStop) ids = ids.first(ids.size() - 1);  // not the EOS
        auto text = tok->Decode(ids, /*skip_special_tokens=*/true);
        std::string answer = text.ok() ? *text : std::string("<undecodable>");
        for (char& ch : answer)
          if (ch == '\n' || ch == '\t') ch = ' ';
        answers[static_cast<size_t>(i)] = std::move(answer);
        const double f = static_cast<double>(++done) / static_cast<double>(n);
        std::fprintf(stderr, "\reval [%-30s] %3.0f%%", std::string(static_cast<size_t>(f * 30), '#').c_str(),
                     f * 100);
        if (done == n) std::fprintf(stderr, "\n");
      };
      StatusOr<uint64_t> id = engine.Submit(std::move(r));
      if (!id.ok()) return engine.Abort(id.status());
    }
    bool cancelled = false;
    for (;;) {
      if (!cancelled && InterruptScope::Received() != 0) {
        RETURN_IF_ERROR(WriteAnswers(a, answers));  // first: the job may not live to the end of the drain
        engine.CancelAll();
        cancelled = true;
      }
      ASSIGN_OR_RETURN(const StepKind kind, engine.Step());
      if (kind != StepKind::kRun) break;
    }
    if (cancelled) std::fprintf(stderr, "\nmoerun: eval interrupted: writing the answers so far\n");
    return Report(a, problems, answers);
  });
}

}  // namespace

void RegisterEvalCommand(CLI::App& app, int* exit_code) {
  auto ev = std::make_shared<EvalArgs>();
  CLI::App* ec =
      app.add_subcommand("eval", "Exact-match accuracy on a JSONL task with batched greedy decoding");
  AddModelOptions(ec, &ev->model);
  ec->add_option("--task", ev->task, "JSONL file: {\"prompt\": ..., \"answer\": ...} per line")->required();
  ec->add_option("--batch", ev->batch, "Sequences decoded together per DP replica")->check(AtLeast(1));
  ec->add_option("--max-new", ev->max_new,
                 "Generated tokens per problem at most (prompt + this <= max_position_embeddings)")
      ->check(AtLeast(1));
  ec->add_option("--answers", ev->answers_out, "Write 'index<TAB>answer' per problem to this file");
  ec->callback([ev, exit_code] {
    const Status s = RunEval(*ev);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
