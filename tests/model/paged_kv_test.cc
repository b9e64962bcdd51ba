// The KV cache on blocks (model/paged_kv.h): the storage's layout and growth; CachedAttention over
// paged rows bitwise equal to contiguous rows (random block tables, several block sizes, every
// small-GEMM ISA), its subnormal softmax weights zeros and its normal ones kept; whole models
// (DeepSeek MLA, Qwen3 GQA) give bitwise the logits of a contiguous cache on a shuffled block table,
// and a sequence reusing another's prefix blocks gives the logits it would compute itself; every
// thread count gives the one-thread logits; NewCache checks its table; Commit and CommitRows fault
// in exactly the pages of the positions they name (mincore).
#include "model/paged_kv.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "../testing/tiny_models.h"
#include "core/thread_pool.h"
#include "model/cached_attention.h"

namespace moerun {
namespace {

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(KvBlockStorage, RowsAreBlockMajorAndGrowKeepsContents) {
  auto s = KvBlockStorage::Create(3, 4, 2, 5, 2).value();  // [3 blocks][2 arrays][2 layers][4][5]
  EXPECT_EQ(s->block_floats(), 2 * 2 * 4 * 5);
  EXPECT_EQ(s->row(1, 0, 0, 0) - s->row(0, 0, 0, 0), s->block_floats());
  EXPECT_EQ(s->row(0, 0, 1, 0) - s->row(0, 0, 0, 0), 4 * 5);
  EXPECT_EQ(s->row(0, 1, 0, 0) - s->row(0, 0, 0, 0), 2 * 4 * 5);
  EXPECT_EQ(s->row(0, 0, 0, 3) - s->row(0, 0, 0, 0), 3 * 5);
  EXPECT_EQ(s->row(2, 1, 1, 3)[4], 0.0f);  // fresh pages read as 0
  for (int32_t b = 0; b < 3; ++b) s->row(b, 1, 1, 3)[4] = static_cast<float>(b + 1);
  ASSERT_TRUE(s->Grow(1000).ok());
  EXPECT_EQ(s->n_blocks(), 1000);
  for (int32_t b = 0; b < 3; ++b) EXPECT_EQ(s->row(b, 1, 1, 3)[4], static_cast<float>(b + 1));
  s->row(999, 1, 1, 3)[4] = 7.0f;  // the new blocks are usable
  EXPECT_TRUE(s->Grow(10).ok());   // never shrinks
  EXPECT_EQ(s->n_blocks(), 1000);
}

TEST(KvBlockStorage, RefusesBadSizes) {
  EXPECT_NE(KvBlockStorage::Create(0, 16, 2, 8, 1).status().message().find("0 blocks"), std::string::npos);
  EXPECT_NE(KvBlockStorage::Create(4, 0, 2, 8, 1).status().message().find("0 tokens"), std::string::npos);
  EXPECT_FALSE(KvBlockStorage::Create(4, 16, 2, 8, 3).ok());
  EXPECT_NE(KvBlockStorage::Create(int64_t{1} << 40, 16, 2, 8, 1).status().message().find("blocks"),
            std::string::npos);
  EXPECT_NE(
      KvBlockStorage::Create(1 << 30, 1 << 20, 1 << 20, 1 << 20, 1).status().message().find("overflows"),
      std::string::npos);
}

// Whether the kernel has MADV_POPULATE_WRITE (Linux 5.14): without it Commit is a no-op.
bool KernelPopulatesForWrite() {
#ifdef MADV_POPULATE_WRITE
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool ok = madvise(p, page, MADV_POPULATE_WRITE) == 0;
  munmap(p, page);
  return ok;
#else
  return false;
#endif
}

// Whether the page holding *p is resident.
bool Resident(const float* p) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  unsigned char in = 0;
  const uintptr_t start = reinterpret_cast<uintptr_t>(p) / page * page;
  EXPECT_EQ(mincore(reinterpret_cast<void*>(start), page, &in), 0);
  return (in & 1) != 0;
}

int64_t PageFloats() { return sysconf(_SC_PAGESIZE) / static_cast<int64_t>(sizeof(float)); }

// 4 KiB pages only, whatever the THP mode: a huge page would make rows resident in bulk.
void NoHugePages(KvBlockStorage& s) {
  EXPECT_EQ(madvise(s.row(0, 0, 0, 0), s.reserved_bytes(), MADV_NOHUGEPAGE), 0);
}

TEST(KvBlockStorage, CommitFaultsInItsPositionsInEveryArrayAndLayer) {
  if (!KernelPopulatesForWrite()) GTEST_SKIP() << "no MADV_POPULATE_WRITE in this kernel";
  // Rows of one page each: [2 blocks][2 arrays][3 layers][8 positions][a page of floats].
  auto s = KvBlockStorage::Create(2, 8, 3, PageFloats(), 2).value();
  NoHugePages(*s);
  s->Commit(1, 2, 5);
  for (int32_t b = 0; b < 2; ++b) {
    for (int64_t a = 0; a < 2; ++a) {
      for (int64_t l = 0; l < 3; ++l) {
        for (int64_t pos = 0; pos < 8; ++pos) {
          SCOPED_TRACE(testing::Message()
                       << "block " << b << " array " << a << " layer " << l << " pos " << pos);
          EXPECT_EQ(Resident(s->row(b, a, l, pos)), b == 1 && pos >= 2 && pos < 5);
        }
      }
    }
  }
  s->Commit(0, 0, 8);  // a whole block
  for (int64_t a = 0; a < 2; ++a) {
    for (int64_t l = 0; l < 3; ++l) {
      for (int64_t pos = 0; pos < 8; ++pos) EXPECT_TRUE(Resident(s->row(0, a, l, pos)));
    }
  }
  EXPECT_EQ(s->row(1, 1, 2, 4)[PageFloats() - 1], 0.0f);  // committed pages still read as 0
}

// A cache of no particular architecture over a storage: only its block table matters here.
class TableCache : public ModelCache {
 public:
  TableCache(std::shared_ptr<KvBlockStorage> s, std::vector<int32_t> table, int64_t capacity)
      : ModelCache(CacheKind::kLatentMla, std::move(s), std::move(table), capacity) {}
  const float* At(int64_t layer, int64_t pos) const { return Row(0, layer, pos); }
};

TEST(ModelCache, CommitRowsCommitsAheadOnceAndNeverPastTheCapacity) {
  if (!KernelPopulatesForWrite()) GTEST_SKIP() << "no MADV_POPULATE_WRITE in this kernel";
  const int64_t capacity = 200, ahead = ModelCache::kCommitAhead;
  auto s = KvBlockStorage::Create(60, 4, 2, PageFloats(), 1).value();
  NoHugePages(*s);
  std::vector<int32_t> table(50);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(3));  // blocks out of order
  TableCache cache(s, table, capacity);
  auto committed_below = [&](int64_t end) {
    for (int64_t pos = 0; pos < capacity; ++pos) {
      for (int64_t l = 0; l < 2; ++l) {
        SCOPED_TRACE(testing::Message() << "pos " << pos << " layer " << l << " committed below " << end);
        EXPECT_EQ(Resident(cache.At(l, pos)), pos < end);
      }
    }
  };
  cache.CommitRows(0, 1);  // a first token: the next `ahead` positions with it
  committed_below(ahead);
  cache.CommitRows(1, 2);  // already committed: nothing more
  committed_below(ahead);
  cache.CommitRows(ahead - 4, ahead + 6);  // crossing the mark: another `ahead` from there
  committed_below(2 * ahead);
  cache.CommitRows(2 * ahead, 2 * ahead + 1);
  committed_below(3 * ahead);
  cache.CommitRows(3 * ahead, 3 * ahead + 1);  // capped at the capacity
  ASSERT_LT(capacity, 4 * ahead);
  committed_below(capacity);
  for (int32_t b = 50; b < 60; ++b) EXPECT_FALSE(Resident(s->row(b, 0, 0, 0)));  // not in the table
}

std::vector<SmallGemmIsa> Isas() {
  std::vector<SmallGemmIsa> out;
  for (SmallGemmIsa isa : {SmallGemmIsa::kRef, SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512}) {
    if (SmallGemmIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

// Keys and values of `ctx` positions, contiguous [ctx, ld] and copied into a NaN-filled block arena
// [n_blocks][2: keys, values][block_rows][ld] under a random block table: the attention of random
// query rows reads only its positions' rows and gives the same bits both ways.
TEST(CachedAttention, PagedRowsGiveTheBitsOfContiguousRows) {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (SmallGemmIsa isa : Isas()) {
    for (int64_t block_rows : {1, 3, 5, 16, 64}) {
      for (int trial = 0; trial < 6; ++trial) {
        SCOPED_TRACE(::testing::Message() << "isa " << static_cast<int>(isa) << " block_rows " << block_rows
                                          << " trial " << trial);
        const int64_t ctx = 1 + rng() % 80, n_rows = 1 + rng() % 9;
        // Trials alternate MLA-like rows (keys = whole rows, values = a prefix of the same rows)
        // and GQA-like heads (a column slice of separate key and value rows).
        const bool mla = trial % 2 == 0;
        const int64_t ld = mla ? 72 : 48, dk = mla ? 72 : 16, dv = mla ? 64 : 16, col = mla ? 0 : 16;
        std::vector<float> k(static_cast<size_t>(ctx * ld)), v(k.size());
        for (float& x : k) x = nd(rng);
        for (float& x : v) x = nd(rng);
        if (mla) v = k;
        const int64_t blocks = (ctx + block_rows - 1) / block_rows, n_blocks = blocks + 3;
        std::vector<int32_t> ids(static_cast<size_t>(n_blocks));
        std::iota(ids.begin(), ids.end(), 0);
        std::shuffle(ids.begin(), ids.end(), rng);
        const std::vector<int32_t> table(ids.begin(), ids.begin() + blocks);
        const int64_t stride = 2 * block_rows * ld;  // floats between blocks
        std::vector<float> arena(static_cast<size_t>(n_blocks * stride), NAN);
        for (int64_t j = 0; j < ctx; ++j) {
          float* kr = arena.data() + table[j / block_rows] * stride + (j % block_rows) * ld;
          std::copy(k.begin() + j * ld, k.begin() + (j + 1) * ld, kr);
          std::copy(v.begin() + j * ld, v.begin() + (j + 1) * ld, kr + block_rows * ld);
        }
        std::vector<int64_t> pos(static_cast<size_t>(n_rows));
        for (int64_t& p : pos) p = rng() % ctx;
        pos[rng() % n_rows] = ctx - 1;
        std::vector<float> q(static_cast<size_t>(n_rows * dk));
        for (float& x : q) x = nd(rng);
        const float scale = 0.125f;
        std::vector<float> want(static_cast<size_t>(n_rows * dv)), got(want.size(), -1.0f);
        CachedAttention(q.data(), n_rows, dk, pos.data(), {{k.data() + col, ld}, dk},
                        {{v.data() + col, ld}, dv}, scale, want.data(), dv, isa);
        const CachedRows pk{{arena.data() + col, ld, table.data(), block_rows, stride}, dk};
        CachedRows pv = pk;
        pv.rows.data = mla ? pk.rows.data : arena.data() + block_rows * ld + col;
        pv.dim = dv;
        CachedAttention(q.data(), n_rows, dk, pos.data(), pk, pv, scale, got.data(), dv, isa);
        ASSERT_TRUE(SameBits(got, want));
        for (float x : got) ASSERT_TRUE(std::isfinite(x));
      }
    }
  }
}

// CachedAttentionSpread (scores by chunks of positions, softmax by rows, value sums by chunks of
// columns, over a pool) gives CachedAttention's bits: contexts around and past kSpreadPositions,
// value widths past kSpreadColumns and not a multiple of it, keys = whole rows and values = a prefix
// of them (MLA), contiguous and in shuffled blocks, pools of 1-3 threads and none, every ISA.
TEST(CachedAttention, SpreadOverAPoolGivesTheBitsOfOneCall) {
  std::mt19937 rng(23);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  ThreadPool pools[] = {ThreadPool(1), ThreadPool(2), ThreadPool(3)};
  const int64_t ld = 160, dk = 160, dv = kSpreadColumns * 2 + 22;
  for (SmallGemmIsa isa : Isas()) {
    for (int64_t ctx : {int64_t{1}, int64_t{7}, kSpreadPositions - 1, kSpreadPositions, kSpreadPositions + 1,
                        int64_t{700}}) {
      SCOPED_TRACE(::testing::Message() << "isa " << static_cast<int>(isa) << " ctx " << ctx);
      const int64_t n_rows = 1 + rng() % 16, block_rows = 16;
      std::vector<float> rows(static_cast<size_t>(ctx * ld)), q(static_cast<size_t>(n_rows * dk));
      for (float& x : rows) x = nd(rng);
      for (float& x : q) x = nd(rng);
      const int64_t blocks = (ctx + block_rows - 1) / block_rows;
      std::vector<int32_t> table(static_cast<size_t>(blocks));
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      std::vector<float> arena(static_cast<size_t>(blocks * block_rows * ld), NAN);
      for (int64_t j = 0; j < ctx; ++j) {
        std::copy(rows.begin() + j * ld, rows.begin() + (j + 1) * ld,
                  arena.begin() + (table[j / block_rows] * block_rows + j % block_rows) * ld);
      }
      std::vector<int64_t> pos(static_cast<size_t>(n_rows));
      for (int64_t& p : pos) p = rng() % ctx;
      pos[0] = ctx - 1;
      for (bool paged : {false, true}) {
        const PagedRows where = paged ? PagedRows{arena.data(), ld, table.data(), block_rows, block_rows * ld}
                                      : PagedRows{rows.data(), ld};
        const CachedRows keys{where, dk}, values{where, dv};
        std::vector<float> want(static_cast<size_t>(n_rows * dv));
        CachedAttention(q.data(), n_rows, dk, pos.data(), keys, values, 0.1f, want.data(), dv, isa);
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pools[0], &pools[1], &pools[2]}) {
          std::vector<float> got(want.size(), -1.0f);
          CachedAttentionSpread(pool, q.data(), n_rows, dk, pos.data(), keys, values, 0.1f, got.data(), dv,
                                isa);
          ASSERT_TRUE(SameBits(got, want)) << "paged " << paged << " threads " << (pool ? pool->size() : 0);
        }
      }
    }
  }
}

// A weight under the smallest normal float (a score 88 below the row's maximum: exp(-88) = 6e-39)
// is an exact zero: with a value of 1e38 it would add 0.6 to the output, and it adds nothing. One at
// 80 below (exp(-80) = 1.8e-35, normal) is kept: with a value of 1e34 it adds 0.18, as the float64
// softmax says. Every small-GEMM ISA.
TEST(CachedAttention, SubnormalWeightsAreZeroAndNormalOnesKept) {
  for (SmallGemmIsa isa : Isas()) {
    SCOPED_TRACE(::testing::Message() << "isa " << static_cast<int>(isa));
    const float q = 1.0f;
    const int64_t pos = 1;
    float out = -1.0f;
    const std::vector<float> k_sub = {-88.0f, 0.0f}, v_sub = {1e38f, 1.0f};
    CachedAttention(&q, 1, 1, &pos, {{k_sub.data(), 1}, 1}, {{v_sub.data(), 1}, 1}, 1.0f, &out, 1, isa);
    EXPECT_EQ(out, 1.0f);  // p1 = 1 / (1 + 6e-39) rounds to 1; p0 counts as 0
    const std::vector<float> k_norm = {-80.0f, 0.0f}, v_norm = {1e34f, 1.0f};
    CachedAttention(&q, 1, 1, &pos, {{k_norm.data(), 1}, 1}, {{v_norm.data(), 1}, 1}, 1.0f, &out, 1, isa);
    const double p0 = std::exp(-80.0) / (1.0 + std::exp(-80.0));
    const double want = p0 * static_cast<double>(1e34f) + (1.0 - p0);
    EXPECT_NEAR(out, want, 1e-6 * want);
    EXPECT_GT(out, 1.1f);
  }
}

// Both cache kinds (and the GQA families' switches), on a tiny random model in deterministic mode
// (batch-invariant rows).
class PagedModelTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto m = Load(&pool_);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
  }
  // The parameter's tiny model, deterministic, on `pool`.
  StatusOr<std::unique_ptr<Model>> Load(ThreadPool* pool) const {
    ModelLoadOptions o;
    o.parallel.deterministic = true;
    return test_models::LoadTinySynthetic(test_models::TinyConfigJson(GetParam()), o, pool);
  }
  std::vector<int32_t> Tokens(int64_t n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t& x : t) x = static_cast<int32_t>(2 + rng() % (model_->hparams().vocab_size - 2));
    return t;
  }
  // Runs `tokens` through `cache` in chunks of the given sizes; every row's logits.
  std::vector<float> Run(ModelCache* cache, std::span<const int32_t> tokens, std::vector<int64_t> chunks) {
    return RunOn(*model_, cache, tokens, std::move(chunks));
  }
  static std::vector<float> RunOn(Model& model, ModelCache* cache, std::span<const int32_t> tokens,
                                  std::vector<int64_t> chunks) {
    std::vector<float> all, part;
    for (int64_t at = 0, i = 0; at < static_cast<int64_t>(tokens.size()); ++i) {
      const int64_t n = std::min<int64_t>(chunks[static_cast<size_t>(i) % chunks.size()],
                                          static_cast<int64_t>(tokens.size()) - at);
      const Status s =
          model.Forward(tokens.subspan(static_cast<size_t>(at), static_cast<size_t>(n)), cache, true, &part);
      EXPECT_TRUE(s.ok()) << s.ToString();
      all.insert(all.end(), part.begin(), part.end());
      at += n;
    }
    return all;
  }

  ThreadPool pool_{2};
  std::unique_ptr<Model> model_;
};

TEST_P(PagedModelTest, ShuffledBlocksGiveTheLogitsOfAContiguousCache) {
  const std::vector<int32_t> tokens = Tokens(23, 1);
  auto contiguous = model_->NewCache(40);
  const std::vector<float> want = Run(contiguous.get(), tokens, {7, 1, 15});
  for (int64_t bt : {1, 4, 16}) {
    SCOPED_TRACE(bt);
    auto storage = model_->NewKvStorage(64, bt).value();
    std::vector<int32_t> ids(64);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(static_cast<uint32_t>(bt)));
    ids.resize(static_cast<size_t>((40 + bt - 1) / bt));
    auto paged = model_->NewCache(storage, ids, 40).value();
    EXPECT_TRUE(SameBits(Run(paged.get(), tokens, {7, 1, 15}), want));
    EXPECT_EQ(paged->size(), 23);
  }
}

TEST_P(PagedModelTest, ReusedPrefixBlocksGiveTheLogitsOfComputingThem) {
  const int64_t bt = 4;
  auto storage = model_->NewKvStorage(32, bt).value();
  // Sequence A fills blocks {5, 2, 9, 0, 7} with 18 ids.
  const std::vector<int32_t> a = Tokens(18, 2);
  auto ca = model_->NewCache(storage, {5, 2, 9, 0, 7}, 20).value();
  (void)Run(ca.get(), a, {18});
  // B shares A's first 12 ids (3 full blocks), then differs: its table starts with A's blocks and
  // it computes only ids [12, 21).
  std::vector<int32_t> b(a.begin(), a.begin() + 12);
  const std::vector<int32_t> tail = Tokens(9, 3);
  b.insert(b.end(), tail.begin(), tail.end());
  auto cb = model_->NewCache(storage, {5, 2, 9, 11, 12, 13}, 24).value();
  cb->set_size(12);
  const std::vector<float> got = Run(cb.get(), std::span<const int32_t>(b).subspan(12), {2, 7});
  // B computed alone from position 0 (contiguous cache, other chunks): rows 12.. equal bitwise.
  auto alone = model_->NewCache(24);
  const std::vector<float> full = Run(alone.get(), b, {5, 16});
  const size_t v = static_cast<size_t>(model_->hparams().vocab_size);
  EXPECT_TRUE(SameBits(got, std::vector<float>(full.begin() + 12 * v, full.end())));
}

// Decode steps split attention's heads over the pool's threads (one task per thread's share), and
// prefill chunks their tokens: every thread count gives the one-thread logits bitwise.
TEST_P(PagedModelTest, EveryThreadCountGivesTheOneThreadLogits) {
  const std::vector<int32_t> tokens = Tokens(12, 4);
  std::vector<float> want;
  for (int threads : {1, 2, 3, 5}) {
    SCOPED_TRACE(threads);
    ThreadPool pool(threads);
    auto m = Load(&pool);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    auto cache = (*m)->NewCache(16);
    const std::vector<float> got = RunOn(**m, cache.get(), tokens, {5, 1, 1, 2, 1});
    if (threads == 1) {
      want = got;
    } else {
      EXPECT_TRUE(SameBits(got, want));
    }
  }
}

TEST_P(PagedModelTest, NewCacheChecksItsTable) {
  auto storage = model_->NewKvStorage(8, 4).value();
  auto short_table = model_->NewCache(storage, {0, 1}, 9);
  EXPECT_NE(short_table.status().message().find("fewer than the capacity 9"), std::string::npos)
      << short_table.status().ToString();
  auto bad_id = model_->NewCache(storage, {0, 8, 1}, 9);
  EXPECT_NE(bad_id.status().message().find("block id 8 at block-table index 1"), std::string::npos)
      << bad_id.status().ToString();
  auto other = KvBlockStorage::Create(8, 4, 1, 3, 1).value();
  auto wrong = model_->NewCache(other, {0, 1, 2}, 9);
  EXPECT_NE(wrong.status().message().find("this model's cache needs"), std::string::npos)
      << wrong.status().ToString();
  EXPECT_TRUE(model_->NewCache(storage, {3, 1, 7}, 9).ok());
}

// Decode steps at a context of kSpreadMinContext (512) positions or more spread each token's
// attention over the pool's threads (DeepSeek's MLA: scores by positions, value sums by columns):
// a 600-id sequence, a prompt of 530 then one id per step, on 2 and 3 threads and in shuffled blocks,
// gives the one-thread logits (which never spread) bitwise. The GQA families run their heads as
// before and must agree too.
TEST_P(PagedModelTest, LongContextDecodeOnEveryThreadCountGivesTheOneThreadLogits) {
  const std::vector<int32_t> tokens = Tokens(600, 5);
  std::vector<int64_t> chunks(71, 1);
  chunks[0] = 530;
  std::vector<float> want;
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(threads);
    ThreadPool pool(threads);
    auto m = Load(&pool);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const int64_t bt = 16, blocks = 600 / bt + 1;
    auto storage = (*m)->NewKvStorage(blocks, bt).value();
    std::vector<int32_t> ids(static_cast<size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(static_cast<uint32_t>(threads)));
    auto cache = threads == 1 ? (*m)->NewCache(600) : (*m)->NewCache(storage, ids, 600).value();
    const std::vector<float> got = RunOn(**m, cache.get(), tokens, chunks);
    const size_t v = static_cast<size_t>((*m)->hparams().vocab_size);
    ASSERT_EQ(got.size(), 600 * v);
    if (threads == 1) {
      want = got;
    } else {
      EXPECT_TRUE(SameBits(got, want));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, PagedModelTest,
                         ::testing::Values("deepseek_v2", "qwen3_moe", "qwen2_moe", "olmoe"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace moerun
