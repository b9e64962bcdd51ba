// KvBlockManager (engine/kv_block_manager.h): reservation and release with refcounts, the budget,
// prefix hits along a verified hash chain (capped to leave the last prompt id), safety against
// hash collisions (the stored ids and the parent are checked, not only the hash), duplicates, LRU
// eviction order (least recently released first, a chain from its tail), growth and statistics.
#include "engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace moerun {
namespace {

std::vector<int32_t> Ids(int32_t first, int n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Checks the invariant free + used = total and that nothing is referenced.
void ExpectIdle(const KvBlockManager& m) {
  const KvBlockStats s = m.stats();
  EXPECT_EQ(s.used_blocks, 0);
  EXPECT_EQ(s.free_blocks, s.total_blocks);
  for (int32_t b = 0; b < m.total_blocks(); ++b) EXPECT_EQ(m.refs(b), 0) << b;
}

TEST(KvBlockManager, ReservesTheWholeCapacityAndReleasesIt) {
  KvBlockManager m(10, 4);
  EXPECT_EQ(m.BlocksFor(9), 3);
  ASSERT_EQ(m.Reserve(1, Ids(100, 5), 9, true), 0);  // 9 positions: 3 blocks, lowest ids first
  EXPECT_EQ(m.Table(1), (std::vector<int32_t>{0, 1, 2}));
  ASSERT_EQ(m.Reserve(2, Ids(200, 3), 16, true), 0);
  EXPECT_EQ(m.Table(2), (std::vector<int32_t>{3, 4, 5, 6}));
  EXPECT_EQ(m.stats().used_blocks, 7);
  EXPECT_EQ(m.stats().free_blocks, 3);
  for (int32_t b : m.Table(1)) EXPECT_EQ(m.refs(b), 1);
  // Too few free blocks: refused, nothing changes.
  EXPECT_FALSE(m.Reserve(3, Ids(300, 2), 13, true).has_value());
  EXPECT_FALSE(m.reserved(3));
  EXPECT_EQ(m.stats().used_blocks, 7);
  m.Release(1);
  EXPECT_FALSE(m.reserved(1));
  ASSERT_EQ(m.Reserve(3, Ids(300, 2), 13, true), 0);  // fits now, the freed ids first
  EXPECT_EQ(m.Table(3), (std::vector<int32_t>{0, 1, 2, 7}));
  m.Release(2);
  m.Release(3);
  ExpectIdle(m);
}

TEST(KvBlockManager, ACapacityBeyondTheBudgetNeverFitsUntilItGrows) {
  KvBlockManager m(3, 4);
  EXPECT_FALSE(m.Reserve(1, Ids(0, 4), 13, true).has_value());  // 4 blocks > 3
  m.Grow(4);
  EXPECT_EQ(m.total_blocks(), 4);
  ASSERT_EQ(m.Reserve(1, Ids(0, 4), 13, true), 0);
  EXPECT_EQ(m.Table(1), (std::vector<int32_t>{0, 1, 2, 3}));
  m.Grow(2);  // never shrinks
  EXPECT_EQ(m.total_blocks(), 4);
}

TEST(KvBlockManager, PrefixHitsFollowTheChainAndLeaveTheLastPromptId) {
  KvBlockManager m(32, 4);
  const std::vector<int32_t> a = Ids(10, 13);  // 3 full blocks + 1 id
  ASSERT_EQ(m.Reserve(1, a, 16, true), 0);
  m.Commit(1, a, 5);  // only block 0 complete so far
  EXPECT_EQ(m.stats().cached_blocks, 1);
  m.Commit(1, a, 13);
  EXPECT_EQ(m.stats().cached_blocks, 3);  // the partial 4th block is not registered
  const std::vector<int32_t> table_a = m.Table(1);
  m.Release(1);
  EXPECT_EQ(m.stats().evictable_blocks, 3);

  // The same 12 ids and more: all 3 blocks hit.
  const std::vector<int32_t> b = Concat(Ids(10, 12), {7, 8, 9});
  ASSERT_EQ(m.Reserve(2, b, 20, true), 12);
  EXPECT_EQ(std::vector<int32_t>(m.Table(2).begin(), m.Table(2).begin() + 3),
            std::vector<int32_t>(table_a.begin(), table_a.begin() + 3));
  // Exactly the 12 ids: the last must be computed, so only 2 blocks hit (floor(11 / 4)).
  ASSERT_EQ(m.Reserve(3, Ids(10, 12), 12, true), 8);
  // 13 ids sharing 4: 1 block; the second block differs.
  ASSERT_EQ(m.Reserve(4, Concat(Ids(10, 4), Ids(50, 9)), 13, true), 4);
  // A different first block: no hit even though later blocks match A's.
  ASSERT_EQ(m.Reserve(5, Concat({99, 11, 12, 13}, Ids(14, 9)), 13, true), 0);
  // No lookup (e.g. an all-logits request): no hit.
  ASSERT_EQ(m.Reserve(6, b, 20, false), 0);
  // Shared blocks count one reference per sequence.
  EXPECT_EQ(m.refs(table_a[0]), 3);  // sequences 2, 3 and 4
  EXPECT_EQ(m.refs(table_a[1]), 2);
  EXPECT_EQ(m.refs(table_a[2]), 1);
  const KvBlockStats s = m.stats();
  EXPECT_EQ(s.prefix_queries, 5);  // sequence 6 did not look up
  EXPECT_EQ(s.query_tokens, 13 + 15 + 12 + 13 + 13);
  EXPECT_EQ(s.hit_tokens, 12 + 8 + 4);
  EXPECT_DOUBLE_EQ(s.hit_rate(), 24.0 / 66.0);
  for (uint64_t q : {2, 3, 4, 5, 6}) m.Release(q);
  ExpectIdle(m);
}

TEST(KvBlockManager, GeneratedIdsRegisterTooOnceCached) {
  KvBlockManager m(16, 4);
  const std::vector<int32_t> prompt = Ids(0, 6);
  ASSERT_EQ(m.Reserve(1, prompt, 12, true), 0);
  const std::vector<int32_t> ids = Concat(prompt, {40, 41, 42});  // 3 generated, 8 positions cached
  m.Commit(1, ids, 8);
  EXPECT_EQ(m.stats().cached_blocks, 2);
  m.Release(1);
  ASSERT_EQ(m.Reserve(2, Concat(ids, {5}), 12, true), 8);
}

// A hash that collides on everything: only the stored ids and parents keep hits right.
TEST(KvBlockManager, HashCollisionsNeverGiveAWrongHit) {
  KvBlockManager m(32, 2, true, [](uint64_t, std::span<const int32_t>) { return uint64_t{42}; });
  const std::vector<int32_t> a = {1, 2, 3, 4, 5};
  ASSERT_EQ(m.Reserve(1, a, 6, true), 0);
  m.Commit(1, a, 5);
  EXPECT_EQ(m.stats().cached_blocks, 1);  // block {3, 4} collides with {1, 2}: the chain stops
  m.Release(1);
  EXPECT_EQ(m.Reserve(2, std::vector<int32_t>{7, 8, 9}, 4, true), 0);  // same hash, other ids
  // {1, 2} then {1, 2}: the hash and the ids of the second block match the cached {1, 2}, but its
  // parent does not (that block starts a chain): no hit beyond the first block.
  EXPECT_EQ(m.Reserve(3, std::vector<int32_t>{1, 2, 1, 2, 0}, 6, true), 2);
  m.Release(2);
  m.Release(3);
  ExpectIdle(m);
}

TEST(KvBlockManager, ADuplicatePrefixKeepsTheFirstCopyAndTheChainGoesOn) {
  KvBlockManager m(32, 2);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6, 7};
  ASSERT_EQ(m.Reserve(1, std::vector<int32_t>(p.begin(), p.begin() + 3), 4, true), 0);
  ASSERT_EQ(m.Reserve(2, p, 8, true), 0);  // both miss: nothing is cached yet
  m.Commit(1, p, 3);                       // sequence 1 registers {1, 2}
  m.Commit(2, p, 7);                       // 2's {1, 2} is a duplicate; {3, 4} and {5, 6} register
  EXPECT_EQ(m.stats().cached_blocks, 3);
  const int32_t first = m.Table(1)[0];
  const std::vector<int32_t> t2 = m.Table(2);
  EXPECT_TRUE(m.cached(first));
  EXPECT_FALSE(m.cached(t2[0]));
  m.Release(1);
  m.Release(2);
  ASSERT_EQ(m.Reserve(3, p, 8, true), 6);  // {1, 2} (sequence 1's) -> {3, 4} -> {5, 6} (2's)
  EXPECT_EQ(m.Table(3)[0], first);
  EXPECT_EQ(m.Table(3)[1], t2[1]);
  EXPECT_EQ(m.Table(3)[2], t2[2]);
  m.Release(3);
  ExpectIdle(m);
}

TEST(KvBlockManager, EvictsOnlyWhenTheFreeListIsEmptyLeastRecentlyReleasedFirst) {
  KvBlockManager m(6, 2);
  const std::vector<int32_t> a = {1, 2, 3, 4, 5}, b = {6, 7, 8, 9, 10};
  ASSERT_EQ(m.Reserve(1, a, 6, true), 0);  // blocks 0 1 2
  m.Commit(1, a, 5);                       // 0 {1, 2} and 1 {3, 4} cached
  ASSERT_EQ(m.Reserve(2, b, 6, true), 0);  // blocks 3 4 5
  m.Commit(2, b, 5);                       // 3 {6, 7} and 4 {8, 9} cached
  m.Release(1);                            // LRU: 1, 0 (tail first); free: 2
  m.Release(2);                            // LRU: 1, 0, 4, 3; free: 2, 5
  EXPECT_EQ(m.stats().evictable_blocks, 4);
  // Two blocks come from the free list: no eviction.
  ASSERT_EQ(m.Reserve(3, std::vector<int32_t>{20}, 4, true), 0);
  EXPECT_EQ(m.Table(3), (std::vector<int32_t>{2, 5}));
  EXPECT_EQ(m.stats().evictions, 0);
  // Then the least recently released: A's tail block 1, then its head 0.
  ASSERT_EQ(m.Reserve(4, std::vector<int32_t>{21}, 2, true), 0);
  EXPECT_EQ(m.Table(4), (std::vector<int32_t>{1}));
  EXPECT_FALSE(m.cached(1));
  EXPECT_TRUE(m.cached(0));
  EXPECT_EQ(m.stats().evictions, 1);
  // A hit takes its block out of the LRU: B's chain hits and the new block evicts A's head.
  ASSERT_EQ(m.Reserve(5, b, 6, true), 4);
  EXPECT_EQ(m.Table(5), (std::vector<int32_t>{3, 4, 0}));
  EXPECT_FALSE(m.cached(0));
  EXPECT_EQ(m.stats().evictions, 2);
  EXPECT_EQ(m.stats().free_blocks, 0);
  // Nothing is left for A (its chain is gone): refused without taking anything.
  EXPECT_FALSE(m.Reserve(6, a, 6, true).has_value());
  for (uint64_t q : {3, 4, 5}) m.Release(q);
  ExpectIdle(m);
  EXPECT_EQ(m.stats().cached_blocks, 2);  // B's chain stays cached
}

TEST(KvBlockManager, WithoutPrefixCachingNothingRegisters) {
  KvBlockManager m(8, 2, /*prefix_cache=*/false);
  const std::vector<int32_t> a = {1, 2, 3, 4, 5};
  ASSERT_EQ(m.Reserve(1, a, 6, true), 0);
  m.Commit(1, a, 5);
  m.Release(1);
  EXPECT_EQ(m.stats().cached_blocks, 0);
  EXPECT_EQ(m.Reserve(2, a, 6, true), 0);
  EXPECT_EQ(m.stats().prefix_queries, 0);
}

}  // namespace
}  // namespace moerun
