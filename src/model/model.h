// Model: the one interface tools and the engine use for every architecture (DeepSeek-V2/V3,
// Qwen3-MoE, ...). An architecture is an entry of the registry in model/arch.h, which parses its
// config.json, names its tensors and loads it into a Model; nothing outside model/ names a
// concrete model class.
//
// A Model runs a batch of sequence chunks at once: each chunk appends its tokens to its own
// ModelCache (one per sequence, created by NewCache, of the kind the architecture needs: MLA's
// latent cache, a GQA K/V cache, ...) and logits come back for every row or for the last row of
// each chunk. A cache's rows live in fixed-size blocks of a KvBlockStorage (model/paged_kv.h,
// made by NewKvStorage): the cache's block table lists its blocks in position order, position p
// in block table[p / block_tokens] at row p % block_tokens. Several caches may share a storage
// (the engine's KV pool) and even blocks (a shared prompt prefix, read-only once filled). Under a parallel
// layout (ParallelOptions) every rank holds its Model; all ranks of a replica call ForwardBatch in step (a
// replica without tokens calls it with none, to take part in the collectives).
//
// Invariants: a cache's positions [0, size) are filled; ForwardBatch appends exactly the chunk's
// tokens (writing only positions [size, size + n), so only the blocks holding them) or fails
// before touching any cache size. Thread safety: a Model is used by one rank's
// thread (internal scratch); caches belong to one sequence and are not shared while written.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "kernels/kernel_table.h"
#include "kernels/weight_format.h"
#include "model/model_config.h"
#include "model/paged_kv.h"
#include "moe/parallel_moe.h"

namespace moerun {

struct ModelLoadOptions {
  // Packed format of the linear layers, e.g. kQ4_K; nullopt: as stored. Embeddings, norms and the
  // MoE router stay full precision, as in llama.cpp; MLA's kv_b stays as stored whatever this says.
  std::optional<WeightFormat> weight_format;
  KernelPolicy kernels;        // kernel rows (kernels/kernel_table.h)
  bool check_tensors = false;  // scan every tensor for NaN/Inf first
  // Layout (world = tp x dp). Attention heads are split over the TP ranks of a replica (row-
  // parallel o_proj, one all-reduce); MoE layers run on ParallelMoe with the same flags; dense
  // MLP, norms, embeddings are replicated, lm_head vocab-parallel. Each DP replica runs its own
  // sequences.
  ParallelOptions parallel;
};

// `progress(fraction, what)` while loading; may be empty.
using LoadProgress = std::function<void(double, const std::string&)>;

// What a cache holds per token and layer; each architecture names the one it uses (model/arch.h).
enum class CacheKind {
  kLatentMla,  // DeepSeek MLA: [RMSNorm(c_kv) | RoPE(k_pe)] shared by all heads (model/kv_cache.h)
  kGqaKv,      // grouped-query attention: roped K and V per local KV head (model/gqa_cache.h)
};
const char* CacheKindName(CacheKind kind);

// One sequence's cache: a block table over a storage. Concrete kinds derive from it (and say what
// the storage's arrays hold); a model checks the kind before use.
class ModelCache {
 public:
  virtual ~ModelCache() = default;
  CacheKind kind() const { return kind_; }
  int64_t capacity() const { return capacity_; }  // positions it can hold, e.g. 4096
  int64_t size() const { return size_; }          // positions filled
  // E.g. positions [0, n) already filled through shared prefix blocks.
  void set_size(int64_t n) { size_ = n; }
  // Before positions [begin, end) are written: commits their memory and that of the next
  // kCommitAhead positions (capped at the capacity), unless an earlier call did, so a decode step
  // writes into committed pages and commits a run of them once every kCommitAhead tokens
  // (KvBlockStorage::Commit). REQUIRES: 0 <= begin <= end <= capacity().
  void CommitRows(int64_t begin, int64_t end);
  static constexpr int64_t kCommitAhead = 64;
  const KvBlockStorage& storage() const { return *storage_; }
  // The sequence's block ids in position order: [ceil(capacity / block_tokens)] at least.
  const std::vector<int32_t>& block_table() const { return table_; }
  int64_t block_tokens() const { return storage_->block_tokens(); }

 protected:
  // `table` must cover `capacity` positions with ids of `storage` (Model::NewCache checks).
  ModelCache(CacheKind kind, std::shared_ptr<KvBlockStorage> storage, std::vector<int32_t> table,
             int64_t capacity)
      : kind_(kind), capacity_(capacity), storage_(std::move(storage)), table_(std::move(table)) {}
  // [width] floats of (array, layer) at position pos.
  float* Row(int64_t array, int64_t layer, int64_t pos) {
    const int64_t bt = storage_->block_tokens();
    return storage_->row(table_[static_cast<size_t>(pos / bt)], array, layer, pos % bt);
  }
  const float* Row(int64_t array, int64_t layer, int64_t pos) const {
    return const_cast<ModelCache*>(this)->Row(array, layer, pos);
  }
  KvBlockStorage& mutable_storage() const { return *storage_; }

 private:
  CacheKind kind_;
  int64_t capacity_;
  int64_t size_ = 0;
  std::shared_ptr<KvBlockStorage> storage_;
  std::vector<int32_t> table_;
  int64_t committed_ = 0;  // positions [0, committed_) were committed by CommitRows
};

// Checks that `table` covers `capacity` positions with block ids of `storage`, and that the storage
// has the rows a cache needs (layers x arrays x width floats per position); errors name the bound.
Status CheckBlockTable(const KvBlockStorage& storage, const std::vector<int32_t>& table, int64_t capacity,
                       int64_t layers, int64_t arrays, int64_t width);

class Model {
 public:
  virtual ~Model() = default;

  // Hyper-parameters as parsed from config.json (model_type, vocab_size, eos_token_id, ...).
  virtual const ModelConfig& hparams() const = 0;
  // A KV storage of `n_blocks` blocks of `block_tokens` positions with this rank's rows per
  // position (its share of the heads, every layer): what the engine's KV pool lives in.
  virtual StatusOr<std::shared_ptr<KvBlockStorage>> NewKvStorage(int64_t n_blocks,
                                                                 int64_t block_tokens) const = 0;
  // A cache for one sequence of up to `capacity` positions over `storage` (made by NewKvStorage of
  // this model), its positions in the blocks `block_table` lists (at least ceil(capacity /
  // block_tokens) ids). Size 0; set_size for positions already filled (shared prefix blocks).
  virtual StatusOr<std::unique_ptr<ModelCache>> NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                         std::vector<int32_t> block_table,
                                                         int64_t capacity) const = 0;
  // A cache of up to `capacity` positions with a private storage of one block (contiguous rows),
  // for tools and tests. Throws std::bad_alloc when the storage cannot be reserved.
  std::unique_ptr<ModelCache> NewCache(int64_t capacity) const;
  // Bytes of cache per position on this rank (all layers), for memory estimates.
  virtual double CacheBytesPerToken() const = 0;
  // Bytes of weights this rank reads to decode one token: attention, dense MLPs, shared experts,
  // num_experts_per_tok routed experts per MoE layer (those it holds, on average), lm_head slice.
  virtual double DecodeWeightBytesPerToken() const = 0;

  // Runs a batch of sequences at once: each chunk's tokens at positions [cache->size(), +n) of its
  // own cache (appended). Linear layers and MoE see all rows together; attention stays within
  // each sequence. logits: [rows, vocab] for every row (all_logits) or for the last row of each
  // chunk with tokens, in chunk order.
  struct SequenceChunk {
    ModelCache* cache;
    std::span<const int32_t> tokens;
  };
  virtual Status ForwardBatch(std::span<const SequenceChunk> seqs, bool all_logits,
                              std::vector<float>* logits) = 0;

  // Runs tokens at positions [cache->size(), cache->size() + T), appending to the cache.
  // logits: [T, vocab] when all_logits, else [1, vocab] for the last token. Under DP a replica
  // without a sequence calls it with no tokens to take part in the collectives (logits empty).
  Status Forward(std::span<const int32_t> tokens, ModelCache* cache, bool all_logits,
                 std::vector<float>* logits);

  // Called after every ForwardBatch with this rank's collectives of that pass (op, group, bytes,
  // what and its states; `--stats`, parallel/transition.h). Empty: the log is not read.
  using CollectiveSink = std::function<void(const std::vector<CollectiveRecord>&)>;
  virtual void set_collective_sink(CollectiveSink sink) = 0;

  // [layer][expert] tokens this rank routed to each expert since load (empty rows for dense
  // layers): serving metrics. Any thread may call it while ForwardBatch runs.
  virtual std::vector<std::vector<uint64_t>> RoutedTokenCounts() const = 0;

 protected:
  virtual int world_size() const = 0;  // ranks in this model's world (1: no peers)
};

}  // namespace moerun
