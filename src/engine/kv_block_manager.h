// KvBlockManager: the bookkeeping of one DP replica's KV pool (world rank 0 only; the memory itself
// is each rank's KvBlockStorage, model/paged_kv.h, and holds no logic). The pool is `total` blocks
// of block_tokens positions, ids [0, total). A sequence reserves blocks for its whole capacity at
// admission (so it never runs out mid-way) and returns them when it finishes.
//
// Prefix caching: a full block of a sequence's ids (positions [i * bt, (i + 1) * bt)) is registered,
// once those positions are in the cache, under the chained hash
//   hash_i = H(hash_{i-1}, ids of block i),   hash_{-1} = a fixed seed,
// so a hash names the whole prefix up to the block's end. A later sequence whose prompt starts
// with the same ids reuses the longest chain of registered blocks instead of computing them (the
// blocks are shared, read-only: positions are only written past a sequence's hits). A hit is
// accepted only when the block's stored ids equal the prompt's and its parent is the block just
// matched (registration serials, never reused), so a hash collision can never give a wrong hit.
// Hits stop at floor((n - 1) / bt) blocks for an n-id prompt: the last prompt id is always
// computed (its logits are needed). Registered blocks nobody references sit in an LRU and keep
// their contents; they are evicted (unregistered and reused) only when the free list is empty,
// least recently released first (a sequence's blocks are released last block first, so a chain is
// evicted from its tail).
//
// Invariants: every block is in exactly one of: referenced (refs > 0; cached or not), the free list
// (refs 0, not cached), the LRU (refs 0, cached); free + LRU + referenced = total. A block is
// registered under at most one hash and a hash names at most one block.
// Thread safety: none; the engine calls it under its lock.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

namespace moerun {

struct KvBlockStats {
  int64_t block_tokens = 0;      // positions per block, e.g. 16
  int64_t total_blocks = 0;      // the pool's budget
  int64_t used_blocks = 0;       // referenced by at least one running sequence
  int64_t free_blocks = 0;       // total - used: the free list plus the evictable cached blocks
  int64_t cached_blocks = 0;     // registered in the prefix map (referenced or evictable)
  int64_t evictable_blocks = 0;  // cached and unreferenced (the LRU)
  int64_t evictions = 0;         // cached blocks unregistered to be reused
  int64_t prefix_queries = 0;    // admissions that looked their prompt up
  int64_t query_tokens = 0;      // the prompt ids of those admissions
  int64_t hit_tokens = 0;        // of which served from cached blocks
  double hit_rate() const {
    return query_tokens > 0 ? static_cast<double>(hit_tokens) / static_cast<double>(query_tokens) : 0.0;
  }
};

class KvBlockManager {
 public:
  // H(previous hash, ids of one block) -> hash; tests inject a colliding one.
  using BlockHash = std::function<uint64_t(uint64_t, std::span<const int32_t>)>;
  static uint64_t DefaultHash(uint64_t prev, std::span<const int32_t> ids);

  // `total` blocks (>= 0; Grow adds more) of `block_tokens` (>= 1) positions. prefix_cache false:
  // no lookups, no registration (every block is private to its sequence).
  KvBlockManager(int64_t total, int64_t block_tokens, bool prefix_cache = true, BlockHash hash = DefaultHash);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t total_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  // Blocks that hold `positions` positions: ceil(positions / block_tokens).
  int64_t BlocksFor(int64_t positions) const { return (positions + block_tokens_ - 1) / block_tokens_; }
  // Raises the budget to `total` blocks (new ids at the end); never shrinks.
  void Grow(int64_t total);

  // Reserves blocks for positions [0, capacity) of sequence `seq` (not yet reserved), whose first
  // ids are `prompt` (at least 1). With `lookup` (and prefix caching on) the longest chain of
  // cached blocks matching the prompt's full blocks (at most floor((size - 1) / block_tokens))
  // comes first in its table. Returns the positions those hits hold (a multiple of block_tokens),
  // or nullopt when the free and evictable blocks are too few (nothing changes).
  std::optional<int64_t> Reserve(uint64_t seq, std::span<const int32_t> prompt, int64_t capacity,
                                 bool lookup);
  // The reserved sequence's block ids in position order ([BlocksFor(capacity)]).
  const std::vector<int32_t>& Table(uint64_t seq) const;
  // Sequence `seq` holds ids[0, cached) in its cache: registers its full blocks not registered
  // yet (when another block already holds the same prefix, that one stays the cached copy).
  void Commit(uint64_t seq, std::span<const int32_t> ids, int64_t cached);
  // The sequence finished: its references drop (cached blocks to the LRU, others to the free list).
  void Release(uint64_t seq);

  KvBlockStats stats() const;
  int32_t refs(int32_t block) const { return blocks_[static_cast<size_t>(block)].refs; }
  bool cached(int32_t block) const { return blocks_[static_cast<size_t>(block)].cached; }
  bool reserved(uint64_t seq) const { return seqs_.count(seq) != 0; }

 private:
  struct Block {
    int32_t refs = 0;
    bool cached = false;  // registered under `hash`
    uint64_t hash = 0;
    uint64_t serial = 0;               // unique per registration (0: none)
    uint64_t parent_serial = 0;        // serial of the previous block of its chain (0: the first block)
    std::vector<int32_t> ids;          // [block_tokens] the ids it holds, when cached
    std::list<int32_t>::iterator lru;  // when in the LRU
  };
  struct Seq {
    std::vector<int32_t> table;
    int64_t registered = 0;      // leading full blocks already handled by Commit (hits included)
    uint64_t hash = 0;           // hash of the prefix through block registered - 1
    uint64_t parent_serial = 0;  // serial of the cached copy of block registered - 1 (0: none yet)
    bool chain = true;           // false after a collision: later blocks are not registered
  };
  void Unregister(int32_t block);

  int64_t block_tokens_;
  bool prefix_cache_;
  BlockHash hash_;
  uint64_t seed_;
  std::vector<Block> blocks_;
  std::set<int32_t> free_;  // unreferenced, not cached: lowest id first (compact memory)
  std::list<int32_t> lru_;  // unreferenced, cached: least recently released first
  std::unordered_map<uint64_t, int32_t> by_hash_;
  std::unordered_map<uint64_t, Seq> seqs_;
  uint64_t next_serial_ = 1;
  int64_t used_ = 0, evictions_ = 0, queries_ = 0, query_tokens_ = 0, hit_tokens_ = 0;
};

}  // namespace moerun
