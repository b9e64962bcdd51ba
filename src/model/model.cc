#include "model/model.h"

#include <algorithm>
#include <cassert>
#include <new>

namespace moerun {

const char* CacheKindName(CacheKind kind) {
  switch (kind) {
    case CacheKind::kLatentMla:
      return "latent MLA";
    case CacheKind::kGqaKv:
      return "GQA K/V";
  }
  return "?";
}

void ModelCache::CommitRows(int64_t begin, int64_t end) {
  assert(0 <= begin && begin <= end && end <= capacity_);
  if (end <= committed_) return;
  const int64_t from = std::max(begin, committed_),
                to = std::min(capacity_, std::max(end, from + kCommitAhead));
  const int64_t bt = storage_->block_tokens();
  for (int64_t p = from; p < to;) {
    const int64_t in_block = p % bt, n = std::min(bt - in_block, to - p);
    storage_->Commit(table_[static_cast<size_t>(p / bt)], in_block, in_block + n);
    p += n;
  }
  committed_ = to;
}

Status CheckBlockTable(const KvBlockStorage& storage, const std::vector<int32_t>& table, int64_t capacity,
                       int64_t layers, int64_t arrays, int64_t width) {
  if (storage.layers() != layers || storage.arrays() != arrays || storage.width() != width) {
    return InvalidArgument(
        "the KV storage holds {} layers x {} arrays x {} floats per position; this model's cache needs {} x "
        "{} x {}",
        storage.layers(), storage.arrays(), storage.width(), layers, arrays, width);
  }
  if (capacity < 0) return InvalidArgument("cache capacity {} must be >= 0", capacity);
  const int64_t bt = storage.block_tokens(), need = (capacity + bt - 1) / bt;
  if (static_cast<int64_t>(table.size()) < need) {
    return OutOfRange(
        "a block table of {} blocks of {} tokens holds {} positions, fewer than the capacity {}",
        table.size(), bt, static_cast<int64_t>(table.size()) * bt, capacity);
  }
  for (size_t i = 0; i < table.size(); ++i) {
    if (table[i] < 0 || table[i] >= storage.n_blocks()) {
      return OutOfRange("block id {} at block-table index {} is outside the KV storage's {} blocks", table[i],
                        i, storage.n_blocks());
    }
  }
  return Status::Ok();
}

std::unique_ptr<ModelCache> Model::NewCache(int64_t capacity) const {
  StatusOr<std::shared_ptr<KvBlockStorage>> storage = NewKvStorage(1, std::max<int64_t>(1, capacity));
  if (!storage.ok()) throw std::bad_alloc();
  StatusOr<std::unique_ptr<ModelCache>> cache = NewCache(std::move(*storage), {0}, capacity);
  if (!cache.ok()) throw std::bad_alloc();
  return std::move(*cache);
}

Status Model::Forward(std::span<const int32_t> tokens, ModelCache* cache, bool all_logits,
                      std::vector<float>* logits) {
  if (tokens.empty() && world_size() == 1) return InvalidArgument("no tokens to run");
  const SequenceChunk chunk{cache, tokens};
  return ForwardBatch(std::span<const SequenceChunk>(&chunk, 1), all_logits, logits);
}

}  // namespace moerun
