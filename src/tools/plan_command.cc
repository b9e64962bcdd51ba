// `moerun plan`: the collectives a layout implies, without running anything. Reads config.json (or
// a GGUF's metadata), validates the layout with the runner's own code (ParallelLayout::Describe ->
// ParallelOptions::Validate), derives every tensor's reduction state from the same declarations
// the runner uses (MakeDispatcher, SharedStateFor, RequestedStateFor, PlanTransition), and prints
// per layer each collective with its group, bytes and states, then the totals of one forward pass.
// The records are those rank 0 would log, in its order: `--json` prints them in the `--stats`
// format (on stdout), and tests/cli/plan_test.sh checks that the two agree on several layouts.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "model/deepseek_model.h"
#include "model/gguf_model.h"
#include "model/gqa_attention.h"
#include "moe/parallel_moe.h"
#include "parallel/layout.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

struct PlanArgs {
  std::string model_dir;
  ParallelFlags parallel;
  std::string tokens = "512";  // per replica: one count for all, or one per replica
  bool all_logits = false;
  bool json = false;
};

struct Planned {
  CollectiveRecord record;
  bool data_dependent = false;  // all_to_all results: rows depend on the routing
};

class Planner {
 public:
  // `text`: where the per-layer lines go (nullptr: nowhere).
  Planner(const ModelConfig& c, const ParallelLayout& layout, std::vector<int64_t> replica_tokens, FILE* text)
      : c_(c), layout_(layout), tokens_(std::move(replica_tokens)), text_(text) {}

  Status Run(bool all_logits);
  const std::vector<Planned>& collectives() const { return out_; }
  int64_t tokens() const { return tokens_[static_cast<size_t>(layout_.dp_rank())]; }

 private:
  void Line(const std::string& s) {
    if (text_ != nullptr) std::fprintf(text_, "%s\n", s.c_str());
  }
  void Add(const char* op, Group g, uint64_t bytes, std::string what, std::string from, std::string to,
           bool data_dependent = false) {
    if (layout_.GroupSize(g) == 1) return;  // a one-rank group issues nothing (as the log shows)
    Line(fmt::format("    {}({}) {}{} B ({:.0f} B/token)  {}{}", op, GroupName(g), data_dependent ? "~" : "",
                     bytes, tokens() > 0 ? static_cast<double>(bytes) / static_cast<double>(tokens()) : 0.0,
                     what, from.empty() ? "" : ": " + from + " -> " + to));
    out_.push_back(
        {{op, GroupName(g), bytes, std::move(what), std::move(from), std::move(to)}, data_dependent});
  }
  // The executor's transition of a [rows, cols] buffer (parallel/transition.h); `total_rows` is
  // the sum of the shards for reduce_scatter.
  Status Transit(const ReductionState& from, const ReductionState& to, const std::string& what, int64_t rows,
                 int64_t cols, int64_t elem, int64_t total_rows = 0) {
    ASSIGN_OR_RETURN(Collective op, PlanTransition(from, to, what));
    if (op == Collective::kNone) return Status::Ok();
    const int64_t n = op == Collective::kReduceScatter ? total_rows : rows;
    Add(CollectiveName(op), from.group, static_cast<uint64_t>(n * cols * elem), what, from.ToString(),
        to.ToString());
    return Status::Ok();
  }
  Status MoeLayer(int64_t l);

  const ModelConfig& c_;
  const ParallelLayout& layout_;
  std::vector<int64_t> tokens_;
  FILE* text_;
  std::vector<Planned> out_;
};

Status Planner::MoeLayer(int64_t l) {
  const ParallelOptions& o = layout_.options();
  const MoeConfig& m = c_.moe;
  const int64_t h = c_.hidden_size, k = m.num_experts_per_tok, elem = o.deterministic ? 16 : 4;
  const int64_t t = tokens(), rows = o.sp ? layout_.SpShard(t).size() : t;
  const std::string name = fmt::format("layer {}", l);
  std::unique_ptr<Dispatcher> dispatcher = MakeDispatcher(o);
  const ReductionState routed = dispatcher->RoutedState(), shared = SharedStateFor(o),
                       want = RequestedStateFor(o);
  const bool has_shared = m.shared_intermediate_size > 0, fuse = !has_shared || routed == shared;
  const Range e = layout_.Experts(), i = layout_.Intermediate(), s = layout_.SharedSlice();
  Line(fmt::format(
      "  MoE: experts [{}, {}) x intermediate [{}, {}), shared width [{}, {}); dispatch {}; {} of {} tokens",
      e.begin, e.end, i.begin, i.end, s.begin, s.end, dispatcher->name(), rows, t));
  Line(fmt::format("    routed output {} [{}, {}]; shared output {}; requested {}", routed.ToString(), rows,
                   h, has_shared ? shared.ToString() : "(no shared experts)", want.ToString()));
  int64_t all_rows = 0;  // every owner's rows: all replicas' tokens (under SP each split over tp)
  for (int64_t n : tokens_) all_rows += n;
  ASSIGN_OR_RETURN(std::vector<PlannedCollective> moves,
                   dispatcher->PlanCollectives({.layout = layout_,
                                                .rows = rows,
                                                .all_owner_rows = all_rows,
                                                .hidden = h,
                                                .k = k,
                                                .elem = elem,
                                                .layer = name}));
  for (PlannedCollective& c : moves) {
    Add(c.op_name != nullptr ? c.op_name : CollectiveName(c.op), c.group, c.bytes, std::move(c.what),
        std::move(c.from), std::move(c.to), c.data_dependent);
  }
  if (fuse) {
    RETURN_IF_ERROR(Transit(routed, want, name + (has_shared ? " routed+shared output" : " routed output"),
                            rows, h, elem));
  } else {
    RETURN_IF_ERROR(Transit(routed, want, name + " routed output", rows, h, elem));
    RETURN_IF_ERROR(Transit(shared, want, name + " shared output", rows, h, elem));
  }
  if (o.sp) {  // the model all-gathers the token shards (f32)
    RETURN_IF_ERROR(
        Transit(want, ReductionState::Replicated(Group::kTp), name + " MoE output (SP)", rows, h, 4));
  }
  return Status::Ok();
}

Status Planner::Run(bool all_logits) {
  const ParallelOptions& o = layout_.options();
  const int64_t h = c_.hidden_size, t = tokens(), elem = o.deterministic ? 16 : 4;
  const Range heads = layout_.Heads();
  Line(fmt::format("embed_tokens [{}, {}] {}", t, h, ReductionState::Replicated(Group::kTp).ToString()));
  for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
    Line(fmt::format("layer {} ({})", l, c_.IsMoeLayer(l) ? "MoE" : "dense"));
    Line(fmt::format("  attention: heads [{}, {}) of {}; o_proj output [{}, {}] {}", heads.begin, heads.end,
                     c_.num_attention_heads, t, h, ReductionState::Partial(Group::kTp).ToString()));
    if (c_.qk_norm == QkNorm::kWhole) {  // OLMoE: every head's q/k sums of squares (f32 pairs)
      ASSIGN_OR_RETURN(const Range kv, GqaKvHeads(c_, layout_.GroupSize(Group::kTp), 0));
      const int64_t cols = 2 * (heads.size() + kv.size());
      RETURN_IF_ERROR(Transit(ReductionState::ColumnShard(Group::kTp), ReductionState::Replicated(Group::kTp),
                              fmt::format("layer {} q/k norm sums", l), t, cols, 4));
    }
    RETURN_IF_ERROR(Transit(ReductionState::Partial(Group::kTp), ReductionState::Replicated(Group::kTp),
                            fmt::format("layer {} o_proj output", l), t, h, elem));
    if (c_.IsMoeLayer(l)) {
      RETURN_IF_ERROR(MoeLayer(l));
    } else {
      Line(fmt::format("  dense MLP output [{}, {}] {} (replicated weights)", t, h,
                       ReductionState::Replicated(Group::kTp).ToString()));
    }
  }
  if (t == 0) return Status::Ok();  // a replica without tokens stops before the lm_head
  const int64_t n = all_logits ? t : 1;
  const Range v = layout_.Vocab();
  const bool sharded = layout_.GroupSize(Group::kTp) > 1;
  const ReductionState logits =
      sharded ? ReductionState::ColumnShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
  Line(fmt::format("lm_head: vocabulary [{}, {}) of {}; logits [{}, {}] {}", v.begin, v.end, c_.vocab_size, n,
                   v.size(), logits.ToString()));
  return Transit(logits, ReductionState::Replicated(Group::kTp), "lm_head logits", n, v.size(), 4);
}

StatusOr<std::vector<int64_t>> ReplicaTokens(const std::string& spec, int dp) {
  ASSIGN_OR_RETURN(std::vector<int32_t> list, ParseTokenList(spec));
  if (list.size() != 1 && static_cast<int>(list.size()) != dp) {
    return InvalidArgument("-p '{}': give one token count, or one per replica ({} for --dp {})", spec, dp,
                           dp);
  }
  std::vector<int64_t> out(static_cast<size_t>(dp), list[0]);
  for (size_t r = 0; r < list.size(); ++r) {
    if (list[r] < 0) return InvalidArgument("-p '{}': token count {} is negative", spec, list[r]);
    out[r] = list[r];
  }
  return out;
}

// The model's config and, for --deterministic, its down projections' stored format alignment (the
// tensors are mapped, never read).
struct PlanModel {
  ModelConfig config;
  DownAlignment align;
};

StatusOr<PlanModel> OpenPlanModel(const std::string& model, bool deterministic) {
  PlanModel m;
  std::unique_ptr<TensorSource> tensors;
  if (IsGgufPath(model)) {
    ASSIGN_OR_RETURN(GgufModel g, OpenGgufModel(model));
    m.config = std::move(g.config);
    tensors = std::move(g.tensors);
  } else {
    const std::string path = model + "/config.json";
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
    ASSIGN_OR_RETURN(m.config, ModelConfig::FromJson(text, path));
    if (deterministic) {
      ASSIGN_OR_RETURN(tensors, Checkpoint::Open(model));
    }
  }
  if (deterministic) m.align = ModelDownAlignment(m.config, *tensors, std::nullopt);
  return m;
}

Status Run(const PlanArgs& a) {
  ASSIGN_OR_RETURN(ParallelOptions options, a.parallel.ToOptions());
  ASSIGN_OR_RETURN(PlanModel model, OpenPlanModel(a.model_dir, options.deterministic));
  const ModelConfig& config = model.config;
  // The runner's validation, for the runner's rank 0.
  ASSIGN_OR_RETURN(
      ParallelLayout layout,
      ParallelLayout::Describe(options, ModelLayoutDims(config, model.align), options.world(), 0));
  ASSIGN_OR_RETURN(std::vector<int64_t> tokens, ReplicaTokens(a.tokens, options.dp));
  FILE* text = a.json ? nullptr : stdout;
  if (text != nullptr) {
    std::fprintf(text,
                 "plan: %s\nlayout: %s, world %d; rank 0 = replica 0, TP rank 0; %s tokens per replica\n",
                 config.Summary().c_str(), options.ToString().c_str(), options.world(), a.tokens.c_str());
  }
  Planner planner(config, layout, tokens, text);
  RETURN_IF_ERROR(planner.Run(a.all_logits));
  std::map<std::string, std::pair<int, uint64_t>> by_kind;
  uint64_t total = 0;
  for (const Planned& p : planner.collectives()) {
    auto& [count, bytes] = by_kind[p.record.op + "(" + p.record.group + ")"];
    ++count;
    bytes += p.record.bytes;
    total += p.record.bytes;
  }
  if (!a.json) {
    std::printf(
        "totals per forward pass (rank 0): %zu collectives, %llu B (%.0f B/token)\n",
        planner.collectives().size(), static_cast<unsigned long long>(total),
        planner.tokens() > 0 ? static_cast<double>(total) / static_cast<double>(planner.tokens()) : 0.0);
    for (const auto& [kind, cb] : by_kind)
      std::printf("  %-22s x%-4d %llu B\n", kind.c_str(), cb.first,
                  static_cast<unsigned long long>(cb.second));
  } else {
    std::string line = "{\"forward\": 0, \"collectives\": [";
    for (size_t i = 0; i < planner.collectives().size(); ++i) {
      const Planned& p = planner.collectives()[i];
      const std::string one = CollectivesJson({p.record});
      line += (i ? ", " : "") + one.substr(1, one.size() - 3) +
              (p.data_dependent ? ", \"data_dependent\": true}" : "}");
    }
    std::printf("%s]}\n", line.c_str());
  }
  return Status::Ok();
}

}  // namespace

void RegisterPlanCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Print the per-layer collectives and reduction states of a layout (reads config.json only)");
  cmd->add_option("-m,--model", args->model_dir, "HF checkpoint directory (config.json) or a .gguf file")
      ->required();
  cmd->add_option("-p,--tokens", args->tokens,
                  "Tokens per forward pass and replica: N, or N0,N1,... per replica");
  cmd->add_flag("--all-logits", args->all_logits, "Logits for every token (as `logits`), not only the last");
  cmd->add_flag("--json", args->json, "Print the collectives as one line in the --stats JSON format instead");
  args->parallel.Add(cmd);
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
