#include "model/paged_kv.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <limits>

namespace moerun {
namespace {

// Bytes of n_blocks blocks of `block_floats` floats, or 0 on overflow.
size_t ArenaBytes(int64_t n_blocks, int64_t block_floats) {
  if (block_floats <= 0 || n_blocks > std::numeric_limits<int64_t>::max() / 4 / block_floats) return 0;
  return static_cast<size_t>(n_blocks * block_floats) * sizeof(float);
}

}  // namespace

StatusOr<std::shared_ptr<KvBlockStorage>> KvBlockStorage::Create(int64_t n_blocks, int64_t block_tokens,
                                                                 int64_t layers, int64_t width,
                                                                 int64_t arrays) {
  if (n_blocks < 1 || n_blocks > std::numeric_limits<int32_t>::max())
    return InvalidArgument("KV storage of {} blocks: needs 1 to {} blocks", n_blocks,
                           std::numeric_limits<int32_t>::max());
  if (block_tokens < 1) return InvalidArgument("KV block of {} tokens: needs at least 1", block_tokens);
  if (layers < 1 || width < 1 || arrays < 1 || arrays > 2) {
    return InvalidArgument(
        "KV storage of {} layers x {} arrays x {} floats: needs >= 1 layer, 1 or 2 arrays, >= 1 float",
        layers, arrays, width);
  }
  int64_t block_floats = 1;  // arrays * layers * block_tokens * width; 0 on overflow
  for (int64_t f : {arrays, layers, block_tokens, width})
    block_floats = block_floats <= std::numeric_limits<int64_t>::max() / 4 / f ? block_floats * f : 0;
  const size_t bytes = ArenaBytes(n_blocks, block_floats);
  if (bytes == 0) {
    return OutOfRange("KV storage of {} blocks x {} tokens x {} layers x {} arrays x {} floats overflows",
                      n_blocks, block_tokens, layers, arrays, width);
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return IOError("cannot reserve {} bytes of address space for a KV storage of {} blocks of {} tokens: {}",
                   bytes, n_blocks, block_tokens, std::strerror(errno));
  }
  std::shared_ptr<KvBlockStorage> s(new KvBlockStorage());
  s->data_ = static_cast<float*>(p);
  s->bytes_ = bytes;
  s->n_blocks_ = n_blocks;
  s->block_tokens_ = block_tokens;
  s->layers_ = layers;
  s->width_ = width;
  s->arrays_ = arrays;
  return s;
}

namespace {

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOERUN_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define MOERUN_TSAN 1
#endif

// The mapping [p, p + old_bytes) grown to new_bytes, moved if need be (its bytes kept); MAP_FAILED
// on failure. mremap moves pages without copying them; ThreadSanitizer (LLVM 14) does not see
// mremap, so its shadow of the moved and the freed ranges goes stale and a later mapping at a
// reused address reports false races: under TSan the move is a new mapping, a copy and an unmap.
void* GrowMapping(void* p, size_t old_bytes, size_t new_bytes) {
#ifdef MOERUN_TSAN
  void* q =
      mmap(nullptr, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (q == MAP_FAILED) return q;
  std::memcpy(q, p, old_bytes);
  munmap(p, old_bytes);
  return q;
#else
  return mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
#endif
}

}  // namespace

Status KvBlockStorage::Grow(int64_t n_blocks) {
  if (n_blocks <= n_blocks_) return Status::Ok();
  const size_t bytes = ArenaBytes(n_blocks, block_floats());
  if (n_blocks > std::numeric_limits<int32_t>::max() || bytes == 0) {
    return OutOfRange("KV storage of {} blocks of {} floats: more than {} blocks or bytes overflow", n_blocks,
                      block_floats(), std::numeric_limits<int32_t>::max());
  }
  void* p = GrowMapping(data_, bytes_, bytes);
  if (p == MAP_FAILED) {
    return IOError("cannot grow the KV storage from {} to {} blocks ({} bytes of address space): {}",
                   n_blocks_, n_blocks, bytes, std::strerror(errno));
  }
  data_ = static_cast<float*>(p);
  bytes_ = bytes;
  n_blocks_ = n_blocks;
  return Status::Ok();
}

namespace {

// Faults in the pages of [begin, end) for writing, if the kernel can (see Commit).
void PopulateForWrite(const float* begin, const float* end) {
#ifdef MADV_POPULATE_WRITE
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(begin) / page * page;
  const uintptr_t e = reinterpret_cast<uintptr_t>(end);
  if (e > b) (void)madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_WRITE);
#else
  (void)begin;
  (void)end;
#endif
}

}  // namespace

void KvBlockStorage::Commit(int32_t block, int64_t pos_begin, int64_t pos_end) {
  assert(block >= 0 && block < n_blocks_ && 0 <= pos_begin && pos_begin <= pos_end &&
         pos_end <= block_tokens_);
  if (pos_begin == pos_end) return;
  if (pos_begin == 0 && pos_end == block_tokens_) {  // the whole block: one run of memory
    const float* first = row(block, 0, 0, 0);
    PopulateForWrite(first, first + block_floats());
    return;
  }
  for (int64_t a = 0; a < arrays_; ++a) {
    for (int64_t l = 0; l < layers_; ++l)
      PopulateForWrite(row(block, a, l, pos_begin), row(block, a, l, pos_end - 1) + width_);
  }
}

KvBlockStorage::~KvBlockStorage() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

}  // namespace moerun
