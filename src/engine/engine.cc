#include "engine/engine.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

#include "engine/stop_strings.h"

namespace moerun {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kContext:
      return "context";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "?";
}

struct Engine::Local {
  std::shared_ptr<KvBlockStorage> storage;                           // this rank's KV blocks (on first use)
  std::unordered_map<uint64_t, std::unique_ptr<ModelCache>> caches;  // this replica's sequences
  std::unordered_map<uint64_t, Sampler> samplers;                    // on the replica root only
  std::vector<Sequence*> planned;  // rank 0: the sequence of each entry of the current plan
};

Engine::Engine(Communicator& world, Model& model, const Tokenizer* tokenizer, EngineOptions options)
    : world_(world),
      model_(model),
      tokenizer_(tokenizer),
      options_(options),
      replicas_(std::max(1, world.size() / std::max(1, options.tp))),
      replica_(world.rank() / std::max(1, options.tp)),
      root_of_replica_(world.rank() % std::max(1, options.tp) == 0),
      queued_(static_cast<size_t>(replicas_)),
      running_(static_cast<size_t>(replicas_)),
      local_(std::make_unique<Local>()) {
  options_.tp = std::max(1, options_.tp);
  options_.max_batch = std::max(1, options_.max_batch);
  options_.kv_blocks = std::max<int64_t>(0, options_.kv_blocks);
  options_.block_tokens = std::max<int64_t>(1, options_.block_tokens);
  if (world.rank() == 0) {
    for (int r = 0; r < replicas_; ++r)
      kv_.emplace_back(options_.kv_blocks, options_.block_tokens, options_.prefix_cache);
  }
}

KvBlockStats Engine::KvStats(int replica) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (replica < 0 || replica >= static_cast<int>(kv_.size())) return {};
  return kv_[static_cast<size_t>(replica)].stats();
}

Engine::~Engine() = default;

StatusOr<uint64_t> Engine::Submit(Request r) {
  if (world_.rank() != 0)
    return InvalidArgument("Submit on world rank {}: only rank 0 takes requests", world_.rank());
  const ModelConfig& c = model_.hparams();
  if (r.prompt.empty()) return InvalidArgument("the request's prompt is empty (needs at least 1 token)");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size) {
      return OutOfRange("prompt token id {} at position {} is outside the vocabulary [0, {})", r.prompt[i], i,
                        c.vocab_size);
    }
  }
  RETURN_IF_ERROR(r.sampling.Validate());
  if (r.top_logprobs < -1 || r.top_logprobs > kMaxTopLogprobs) {
    return InvalidArgument("top_logprobs {} must be in [0, {}] (or -1: none)", r.top_logprobs,
                           kMaxTopLogprobs);
  }
  if (r.max_tokens < 0) return InvalidArgument("max_tokens {} must be >= 0", r.max_tokens);
  const int64_t n = static_cast<int64_t>(r.prompt.size());
  const int64_t capacity = r.context > 0 ? r.context : n + r.max_tokens;
  if (n > capacity) return InvalidArgument("the prompt has {} tokens, more than the context {}", n, capacity);
  if (capacity > c.max_position_embeddings) {
    return InvalidArgument("context {} exceeds max_position_embeddings {}", capacity,
                           c.max_position_embeddings);
  }
  if (r.replica >= replicas_)
    return InvalidArgument("replica {} does not exist (dp = {})", r.replica, replicas_);
  const int64_t blocks = (capacity + options_.block_tokens - 1) / options_.block_tokens;
  if (options_.kv_blocks > 0 && blocks > options_.kv_blocks) {
    return OutOfRange(
        "the request's context of {} tokens needs {} KV blocks of {} tokens, more than the whole KV "
        "pool of {} blocks",
        capacity, blocks, options_.block_tokens, options_.kv_blocks);
  }
  const bool wants_logits = r.all_logits || static_cast<bool>(r.on_logits) || r.prompt_logprobs;
  if (wants_logits && r.replica > 0) {
    return InvalidArgument("logits are delivered on world rank 0: the request needs replica 0, not {}",
                           r.replica);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.max_queue > 0) {
    size_t queued = 0;
    for (const auto& q : queued_) queued += q.size();
    if (static_cast<int64_t>(queued) >= options_.max_queue) {
      return ResourceExhausted("{} requests are already waiting (the queue holds at most {})", queued,
                               options_.max_queue);
    }
  }
  const int replica = r.replica >= 0 ? r.replica : wants_logits ? 0 : static_cast<int>(dealt_++ % replicas_);
  const uint64_t id = next_id_++;
  if (options_.kv_blocks == 0) kv_[static_cast<size_t>(replica)].Grow(options_.max_batch * blocks);
  auto s = std::make_unique<Sequence>(id, std::move(r), replica, capacity, tokenizer_);
  queued_[static_cast<size_t>(replica)].push_back(s.get());
  sequences_.emplace(id, std::move(s));
  submitted_.notify_all();
  return id;
}

bool Engine::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sequences_.find(id);
  if (it == sequences_.end() || it->second->finished() || it->second->cancel_requested_) return false;
  it->second->cancel_requested_ = true;
  cancels_.push_back(id);
  submitted_.notify_all();  // an idle Step wakes up to apply it
  return true;
}

int Engine::CancelAll() {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  auto cancel = [&](Sequence* s) {
    if (s->finished() || s->cancel_requested_) return;
    s->cancel_requested_ = true;
    cancels_.push_back(s->id());
    ++n;
  };
  for (const auto& q : queued_)
    for (Sequence* s : q) cancel(s);
  for (const auto& r : running_)
    for (Sequence* s : r) cancel(s);
  submitted_.notify_all();
  return n;
}

Engine::Load Engine::CurrentLoad() const {
  std::lock_guard<std::mutex> lock(mu_);
  Load load;
  for (const auto& q : queued_) load.queued += static_cast<int64_t>(q.size());
  for (const auto& r : running_) load.running += static_cast<int64_t>(r.size());
  return load;
}

void Engine::ApplyCancellations() {
  std::vector<Sequence*> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t id : std::exchange(cancels_, {})) {
      auto it = sequences_.find(id);
      if (it == sequences_.end() || it->second->finished()) continue;
      Sequence* s = it->second.get();
      if (!s->running_) {  // still queued: it never had a cache
        auto& q = queued_[static_cast<size_t>(s->replica())];
        q.erase(std::find(q.begin(), q.end(), s));
      }
      cancelled.push_back(s);
    }
  }
  for (Sequence* s : cancelled) {
    if (s->running_) {
      (void)Finish(s, FinishReason::kCancelled, /*flush_text=*/false);
    } else {
      s->finish_ = FinishReason::kCancelled;
    }
    const TokenEvent event{s->id(), -1, "", FinishReason::kCancelled, std::nullopt};
    if (s->request().on_token) s->request().on_token(event);
    if (s->request().on_finish) s->request().on_finish(*s);
    Forget(s);
  }
}

bool Engine::HasWork() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int r = 0; r < replicas_; ++r) {
    if (!queued_[static_cast<size_t>(r)].empty() || !running_[static_cast<size_t>(r)].empty()) return true;
  }
  return false;
}

const Sequence* Engine::Find(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

StepPlan Engine::Plan() {
  ApplyCancellations();
  StepPlan p;
  p.header.step = step_++;
  p.releases = std::exchange(releases_, {});
  local_->planned.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool any_running = false;
    for (const auto& run : running_) any_running = any_running || !run.empty();
    for (int r = 0; r < replicas_ && (!options_.admit_when_idle || !any_running); ++r) {
      auto& queue = queued_[static_cast<size_t>(r)];
      auto& run = running_[static_cast<size_t>(r)];
      while (static_cast<int>(run.size()) < options_.max_batch && !queue.empty()) {
        Sequence* s = queue.front();
        // Blocks for its whole capacity, cached prompt blocks first; too few free: it waits (FIFO).
        KvBlockManager& kv = kv_[static_cast<size_t>(r)];
        const std::optional<int64_t> hits =
            kv.Reserve(s->id(), s->request().prompt, s->capacity(),
                       !s->request().all_logits && !s->request().prompt_logprobs);
        if (!hits) break;
        queue.pop_front();
        s->running_ = true;
        s->cached_ = *hits;
        run.push_back(s);
        const std::vector<int32_t>& table = kv.Table(s->id());
        p.starts.push_back({.sequence = s->id(),
                            .capacity = s->capacity(),
                            .cached = *hits,
                            .replica = r,
                            .n_blocks = static_cast<uint32_t>(table.size()),
                            .sampling = s->request().sampling});
        p.block_ids.insert(p.block_ids.end(), table.begin(), table.end());
      }
    }
  }
  for (int r = 0; r < replicas_; ++r) {
    const auto& run = running_[static_cast<size_t>(r)];
    // Decode ids (one per sequence) always run; prompt chunks share what is left of the budget.
    int64_t decoding = 0;
    for (const Sequence* s : run) decoding += s->cached() >= static_cast<int64_t>(s->request().prompt.size());
    int64_t budget = options_.max_step_tokens > 0 ? options_.max_step_tokens - decoding
                                                  : std::numeric_limits<int64_t>::max();
    for (Sequence* s : run) {
      const int64_t total = static_cast<int64_t>(s->ids().size());
      int64_t n = total - s->cached();
      if (n <= 0) continue;
      if (s->cached() < static_cast<int64_t>(s->request().prompt.size())) {  // prefill chunk
        if (options_.max_chunk > 0) n = std::min(n, options_.max_chunk);
        n = std::min(n, budget);
        if (n <= 0) continue;
        budget -= n;
      }
      PlanEntry e{s->id(), r, static_cast<int32_t>(n), 0, 0};
      const Request& q = s->request();
      if (s->cached() + n == total && s->num_generated() < q.max_tokens) e.flags |= kPlanSample;
      const bool prefill = s->cached() < static_cast<int64_t>(q.prompt.size());
      if (q.all_logits || (q.prompt_logprobs && prefill)) e.flags |= kPlanAllLogits;
      if (q.top_logprobs >= 0) {
        e.flags |= kPlanLogprobs;
        e.top_n = static_cast<uint32_t>(q.top_logprobs);
      }
      p.entries.push_back(e);
      p.tokens.insert(p.tokens.end(), s->ids().begin() + s->cached(), s->ids().begin() + s->cached() + n);
      s->cached_ += n;
      local_->planned.push_back(s);
    }
  }
  p.header.kind = p.entries.empty() ? StepKind::kIdle : StepKind::kRun;
  return p;
}

StatusOr<StepKind> Engine::Step(std::chrono::milliseconds wait) {
  StepPlan plan;
  if (world_.rank() == 0) {
    if (wait.count() > 0 && !HasWork()) {
      const auto cap = std::min({wait, options_.max_idle_wait, world_.timeout() / 4});
      std::unique_lock<std::mutex> lock(mu_);
      submitted_.wait_for(lock, cap, [&] {
        for (const auto& q : queued_)
          if (!q.empty()) return true;
        return false;
      });
    }
    plan = Plan();
  }
  RETURN_IF_ERROR(BroadcastPlan(world_, &plan));
  if (plan.header.kind == StepKind::kAbort) {
    return Internal("engine step {}: world rank 0 aborted (its error is reported there)", plan.header.step);
  }
  RETURN_IF_ERROR(Run(plan));
  return plan.header.kind;
}

Status Engine::RunUntilIdle() {
  while (true) {
    ASSIGN_OR_RETURN(StepKind kind, Step());
    if (kind != StepKind::kRun) return Status::Ok();
  }
}

Status Engine::Shutdown() {
  if (world_.rank() != 0)
    return InvalidArgument("Shutdown on world rank {}: only rank 0 stops the engine", world_.rank());
  StepPlan plan;
  plan.header.step = step_++;
  plan.header.kind = StepKind::kShutdown;
  plan.releases = std::exchange(releases_, {});
  RETURN_IF_ERROR(BroadcastPlan(world_, &plan));
  return Run(plan);
}

Status Engine::Abort(Status status) {
  if (world_.rank() != 0) return status;
  StepPlan plan;
  plan.header.step = step_++;
  plan.header.kind = StepKind::kAbort;
  (void)BroadcastPlan(world_, &plan);  // best effort: the caller's error is what matters
  return status;
}

Status Engine::Finish(Sequence* s, FinishReason reason, bool flush_text) {
  s->finish_ = reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& run = running_[static_cast<size_t>(s->replica())];
    run.erase(std::find(run.begin(), run.end(), s));
    kv_[static_cast<size_t>(s->replica())].Release(s->id());  // its caches go with the next plan
  }
  releases_.push_back(s->id());
  if (flush_text) s->text_ += s->detokenizer_.Flush();  // an incomplete last character as U+FFFD
  return Status::Ok();
}

void Engine::Forget(const Sequence* s) {
  std::lock_guard<std::mutex> lock(mu_);
  sequences_.erase(s->id());
}

Status Engine::Run(const StepPlan& plan) {
  Local& local = *local_;
  for (uint64_t id : plan.releases) {
    local.caches.erase(id);
    local.samplers.erase(id);
  }
  size_t block_at = 0;  // this start's table: block_ids[block_at, + n_blocks)
  for (const SequenceStart& st : plan.starts) {
    const size_t at = std::exchange(block_at, block_at + st.n_blocks);
    if (st.replica != replica_) continue;
    if (block_at > plan.block_ids.size()) {
      return Internal("engine step {}: the block tables of the starts exceed the plan's {} block ids",
                      plan.header.step, plan.block_ids.size());
    }
    std::vector<int32_t> table(plan.block_ids.begin() + static_cast<ptrdiff_t>(at),
                               plan.block_ids.begin() + static_cast<ptrdiff_t>(block_at));
    // The storage: kv_blocks blocks; auto: grown (at least doubling) to the highest id rank 0 hands out.
    const int64_t need = table.empty() ? 1 : *std::max_element(table.begin(), table.end()) + 1;
    const int64_t have = local.storage ? local.storage->n_blocks() : 0;
    const int64_t want = options_.kv_blocks > 0 ? options_.kv_blocks : std::max(need, 2 * have);
    if (local.storage == nullptr) {
      ASSIGN_OR_RETURN(local.storage, model_.NewKvStorage(want, options_.block_tokens));
    } else if (need > have) {
      RETURN_IF_ERROR(local.storage->Grow(want));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<ModelCache> cache,
                     model_.NewCache(local.storage, std::move(table), st.capacity));
    cache->set_size(st.cached);
    local.caches[st.sequence] = std::move(cache);
    if (root_of_replica_) local.samplers.insert_or_assign(st.sequence, Sampler(st.sampling));
  }
  if (plan.header.kind != StepKind::kRun) return Status::Ok();

  // This replica's chunks, in plan order.
  std::vector<Model::SequenceChunk> chunks;
  std::vector<size_t> mine;  // indices of this replica's entries
  bool all_logits = false;
  size_t offset = 0;
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const PlanEntry& e = plan.entries[i];
    if (e.replica == replica_) {
      auto it = local.caches.find(e.sequence);
      if (it == local.caches.end()) {
        return Internal("engine step {}: sequence {} has no cache on world rank {}", plan.header.step,
                        e.sequence, world_.rank());
      }
      chunks.push_back({it->second.get(), std::span<const int32_t>(plan.tokens).subspan(offset, e.n_tokens)});
      mine.push_back(i);
      all_logits = all_logits || (e.flags & kPlanAllLogits) != 0;
    }
    offset += static_cast<size_t>(e.n_tokens);
  }
  std::vector<float> logits;
  RETURN_IF_ERROR(model_.ForwardBatch(chunks, all_logits, &logits));

  // The replica root samples (with logprobs when asked); rank 0 also hands its sequences' logits
  // to their callbacks and scores their prompts.
  const int64_t v = model_.hparams().vocab_size;
  std::vector<LogprobRecord> sampled;
  if (root_of_replica_) {
    int64_t row = 0;
    for (size_t i : mine) {
      const PlanEntry& e = plan.entries[i];
      const int64_t rows = all_logits ? e.n_tokens : 1;
      const std::span<const float> block(logits.data() + row * v, static_cast<size_t>(rows * v));
      row += rows;
      if (world_.rank() == 0) DeliverLogits(local.planned[i], e, block, rows);
      if ((e.flags & kPlanSample) == 0) continue;
      auto it = local.samplers.find(e.sequence);
      if (it == local.samplers.end()) return Internal("engine: sequence {} has no sampler", e.sequence);
      const std::span<const float> last = block.subspan(static_cast<size_t>((rows - 1) * v));
      const int32_t token = it->second.Sample(last);
      sampled.push_back((e.flags & kPlanLogprobs) != 0
                            ? LogprobRecord::From(ComputeLogprobs(last, token, static_cast<int>(e.top_n)))
                            : LogprobRecord{.token = token});
    }
  }
  // Under DP, every replica root's samples reach rank 0 (one all-gather, in plan order per replica).
  std::vector<LogprobRecord> samples = sampled;
  if (replicas_ > 1) {
    std::vector<size_t> count(static_cast<size_t>(replicas_), 0);
    for (const PlanEntry& e : plan.entries)
      count[static_cast<size_t>(e.replica)] += (e.flags & kPlanSample) != 0;
    std::vector<size_t> bytes(static_cast<size_t>(world_.size()), 0);
    size_t total = 0;
    for (int q = 0; q < world_.size(); q += options_.tp) {
      bytes[static_cast<size_t>(q)] = count[static_cast<size_t>(q / options_.tp)] * sizeof(LogprobRecord);
      total += bytes[static_cast<size_t>(q)];
    }
    samples.assign(total / sizeof(LogprobRecord), LogprobRecord{});
    RETURN_IF_ERROR(world_.AllGather(sampled.data(), samples.data(), bytes));
  }
  if (world_.rank() != 0) return Status::Ok();

  {  // The full blocks this step completed join the prefix cache.
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < plan.entries.size(); ++i) {
      const Sequence* s = local.planned[i];
      kv_[static_cast<size_t>(s->replica())].Commit(s->id(), s->ids(), s->cached());
    }
  }
  // Rank 0: append, stream, stop. samples holds replica 0's, then replica 1's, ...
  std::vector<size_t> next(static_cast<size_t>(replicas_), 0);
  for (size_t base = 0, r = 0; r < static_cast<size_t>(replicas_); ++r) {
    next[r] = base;
    for (const PlanEntry& e : plan.entries)
      base += e.replica == static_cast<int>(r) && (e.flags & kPlanSample);
  }
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const PlanEntry& e = plan.entries[i];
    Sequence* s = local.planned[i];
    if ((e.flags & kPlanSample) == 0) {
      if (s->request().max_tokens == 0 && s->cached() == static_cast<int64_t>(s->ids().size())) {
        RETURN_IF_ERROR(Finish(s, FinishReason::kLength, /*flush_text=*/false));
        if (s->request().on_finish) s->request().on_finish(*s);
        Forget(s);
      }
      continue;
    }
    RETURN_IF_ERROR(
        Accept(s, samples[next[static_cast<size_t>(e.replica)]++], (e.flags & kPlanLogprobs) != 0));
    if (s->finished()) Forget(s);
  }
  return Status::Ok();
}

void Engine::DeliverLogits(Sequence* s, const PlanEntry& e, std::span<const float> block, int64_t rows) {
  const int64_t v = model_.hparams().vocab_size;
  const Request& q = s->request();
  if (q.on_logits) {
    const bool every = (e.flags & kPlanAllLogits) != 0;
    if (every || (e.flags & kPlanSample)) {
      const int64_t n = every ? rows : 1;
      q.on_logits(block.subspan(static_cast<size_t>((rows - n) * v)), n);
    }
  }
  // Prompt scoring: row r of this chunk (position begin + r) predicts prompt id begin + r + 1.
  const int64_t n_prompt = static_cast<int64_t>(q.prompt.size());
  if (!q.prompt_logprobs || (e.flags & kPlanAllLogits) == 0) return;
  const int64_t begin = s->cached() - e.n_tokens;
  if (s->prompt_logprobs_.empty()) s->prompt_logprobs_.resize(static_cast<size_t>(n_prompt));
  for (int64_t r = 0; r < rows && begin + r + 1 < n_prompt; ++r) {
    const int64_t next = begin + r + 1;
    s->prompt_logprobs_[static_cast<size_t>(next)] =
        ComputeLogprobs(block.subspan(static_cast<size_t>(r * v), static_cast<size_t>(v)),
                        q.prompt[static_cast<size_t>(next)], std::max(0, q.top_logprobs));
  }
}

Status Engine::Accept(Sequence* s, const LogprobRecord& sample, bool with_logprobs) {
  const int32_t token = sample.token;
  s->ids_.push_back(token);
  TokenEvent event{s->id(), token, "", FinishReason::kNone, std::nullopt};
  if (with_logprobs) event.logprobs = sample.ToLogprobs();
  const Request& q = s->request();
  const size_t searched = s->text_.size();
  s->text_ += s->detokenizer_.Push(token);
  FinishReason reason = FinishReason::kNone;
  bool cut = false;
  if (const size_t at = FindStop(s->text_, searched, q.stop_strings); at != std::string::npos) {
    s->text_.resize(at);  // the stop string and what follows are never reported
    reason = FinishReason::kStop;
    cut = true;
  } else if (std::find(q.stop_ids.begin(), q.stop_ids.end(), token) != q.stop_ids.end()) {
    reason = FinishReason::kStop;
  } else if (static_cast<int64_t>(s->ids().size()) >= s->capacity()) {
    reason = FinishReason::kContext;
  } else if (s->num_generated() >= q.max_tokens) {
    reason = FinishReason::kLength;
  }
  if (reason != FinishReason::kNone) RETURN_IF_ERROR(Finish(s, reason, /*flush_text=*/!cut));
  // Stream what can no longer become part of a stop string (everything, once finished).
  const size_t final_end =
      s->finished() ? s->text_.size() : s->text_.size() - HeldBackBytes(s->text_, q.stop_strings);
  if (final_end > s->emitted_) {
    event.text = s->text_.substr(s->emitted_, final_end - s->emitted_);
    s->emitted_ = final_end;
  }
  event.finish = s->finish_;
  if (q.on_token) q.on_token(event);
  if (s->finished() && q.on_finish) q.on_finish(*s);
  return Status::Ok();
}

}  // namespace moerun
