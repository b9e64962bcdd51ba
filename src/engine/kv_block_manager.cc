#include "engine/kv_block_manager.h"

#include <algorithm>
#include <cassert>

namespace moerun {
namespace {

uint64_t Mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint64_t kSeed = 0x6b76626c6f636b73ull;  // "kvblocks"

}  // namespace

uint64_t KvBlockManager::DefaultHash(uint64_t prev, std::span<const int32_t> ids) {
  uint64_t h = Mix(prev + 0x9e3779b97f4a7c15ull);
  for (int32_t id : ids)
    h = Mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(id)) + 0x9e3779b97f4a7c15ull));
  return Mix(h ^ ids.size());
}

KvBlockManager::KvBlockManager(int64_t total, int64_t block_tokens, bool prefix_cache, BlockHash hash)
    : block_tokens_(std::max<int64_t>(1, block_tokens)),
      prefix_cache_(prefix_cache),
      hash_(std::move(hash)),
      seed_(kSeed) {
  Grow(total);
}

void KvBlockManager::Grow(int64_t total) {
  for (int64_t b = total_blocks(); b < total; ++b) {
    blocks_.emplace_back();
    free_.insert(static_cast<int32_t>(b));
  }
}

void KvBlockManager::Unregister(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  auto it = by_hash_.find(b.hash);
  if (it != by_hash_.end() && it->second == block) by_hash_.erase(it);
  b.cached = false;
  b.hash = b.serial = b.parent_serial = 0;
  b.ids.clear();
}

std::optional<int64_t> KvBlockManager::Reserve(uint64_t seq, std::span<const int32_t> prompt,
                                               int64_t capacity, bool lookup) {
  assert(!reserved(seq) && !prompt.empty());
  const int64_t need = BlocksFor(std::max<int64_t>(capacity, 1));
  if (need > total_blocks()) return std::nullopt;
  const bool look = lookup && prefix_cache_;
  // The longest verified chain of cached blocks over the prompt's full blocks but the last id.
  std::vector<int32_t> hits;
  uint64_t hash = seed_, parent = 0;
  if (look) {
    const int64_t max_hits = (static_cast<int64_t>(prompt.size()) - 1) / block_tokens_;
    for (int64_t i = 0; i < max_hits && i < need; ++i) {
      const std::span<const int32_t> ids =
          prompt.subspan(static_cast<size_t>(i * block_tokens_), static_cast<size_t>(block_tokens_));
      const uint64_t h = hash_(hash, ids);
      auto it = by_hash_.find(h);
      if (it == by_hash_.end()) break;
      const Block& b = blocks_[static_cast<size_t>(it->second)];
      if (b.parent_serial != parent || !std::equal(ids.begin(), ids.end(), b.ids.begin(), b.ids.end())) break;
      hits.push_back(it->second);
      hash = h;
      parent = b.serial;
    }
  }
  int64_t idle_hits = 0;  // hits sitting in the LRU: claiming them leaves fewer to take
  for (int32_t b : hits) idle_hits += blocks_[static_cast<size_t>(b)].refs == 0;
  const int64_t available = static_cast<int64_t>(free_.size() + lru_.size()) - idle_hits;
  if (need - static_cast<int64_t>(hits.size()) > available) return std::nullopt;

  Seq s;
  s.table.reserve(static_cast<size_t>(need));
  for (int32_t id : hits) {
    Block& b = blocks_[static_cast<size_t>(id)];
    if (b.refs++ == 0) {
      lru_.erase(b.lru);
      ++used_;
    }
    s.table.push_back(id);
  }
  while (static_cast<int64_t>(s.table.size()) < need) {
    int32_t id;
    if (!free_.empty()) {
      id = *free_.begin();
      free_.erase(free_.begin());
    } else {  // evict the least recently released cached block
      id = lru_.front();
      lru_.pop_front();
      Unregister(id);
      ++evictions_;
    }
    blocks_[static_cast<size_t>(id)].refs = 1;
    ++used_;
    s.table.push_back(id);
  }
  s.registered = static_cast<int64_t>(hits.size());
  s.hash = hash;
  s.parent_serial = parent;
  seqs_.emplace(seq, std::move(s));
  const int64_t hit_tokens = static_cast<int64_t>(hits.size()) * block_tokens_;
  if (look) {
    ++queries_;
    query_tokens_ += static_cast<int64_t>(prompt.size());
    hit_tokens_ += hit_tokens;
  }
  return hit_tokens;
}

const std::vector<int32_t>& KvBlockManager::Table(uint64_t seq) const { return seqs_.at(seq).table; }

void KvBlockManager::Commit(uint64_t seq, std::span<const int32_t> ids, int64_t cached) {
  if (!prefix_cache_) return;
  Seq& s = seqs_.at(seq);
  const int64_t full = std::min({cached, static_cast<int64_t>(ids.size()),
                                 static_cast<int64_t>(s.table.size()) * block_tokens_}) /
                       block_tokens_;
  for (; s.chain && s.registered < full; ++s.registered) {
    const std::span<const int32_t> block =
        ids.subspan(static_cast<size_t>(s.registered * block_tokens_), static_cast<size_t>(block_tokens_));
    const uint64_t h = hash_(s.hash, block);
    const int32_t id = s.table[static_cast<size_t>(s.registered)];
    auto it = by_hash_.find(h);
    if (it != by_hash_.end()) {
      const Block& c = blocks_[static_cast<size_t>(it->second)];
      if (c.parent_serial != s.parent_serial ||
          !std::equal(block.begin(), block.end(), c.ids.begin(), c.ids.end())) {
        s.chain = false;  // a collision: this prefix cannot be named, nor anything after it
        break;
      }
      s.parent_serial = c.serial;  // the same prefix is cached already: that copy stays canonical
    } else {
      Block& b = blocks_[static_cast<size_t>(id)];
      b.cached = true;
      b.hash = h;
      b.serial = next_serial_++;
      b.parent_serial = s.parent_serial;
      b.ids.assign(block.begin(), block.end());
      by_hash_.emplace(h, id);
      s.parent_serial = b.serial;
    }
    s.hash = h;
  }
}

void KvBlockManager::Release(uint64_t seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  const std::vector<int32_t>& table = it->second.table;
  for (auto b = table.rbegin(); b != table.rend(); ++b) {  // the tail first: evicted before its prefix
    Block& block = blocks_[static_cast<size_t>(*b)];
    if (--block.refs > 0) continue;
    --used_;
    if (block.cached) {
      block.lru = lru_.insert(lru_.end(), *b);
    } else {
      free_.insert(*b);
    }
  }
  seqs_.erase(it);
}

KvBlockStats KvBlockManager::stats() const {
  KvBlockStats s;
  s.block_tokens = block_tokens_;
  s.total_blocks = total_blocks();
  s.used_blocks = used_;
  s.free_blocks = static_cast<int64_t>(free_.size() + lru_.size());
  s.cached_blocks = static_cast<int64_t>(by_hash_.size());
  s.evictable_blocks = static_cast<int64_t>(lru_.size());
  s.evictions = evictions_;
  s.prefix_queries = queries_;
  s.query_tokens = query_tokens_;
  s.hit_tokens = hit_tokens_;
  return s;
}

}  // namespace moerun
