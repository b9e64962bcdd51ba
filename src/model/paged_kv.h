// KvBlockStorage: one rank's physical KV memory, an arena of fixed-size blocks that sequence caches
// (ModelCache, model/model.h) address through their block tables. The engine's block manager
// (engine/kv_block_manager.h) decides which blocks a sequence uses; the storage has no allocation
// logic, it only maps a block id to its memory.
//
// Layout: n_blocks blocks of block_tokens positions; a block holds every layer's rows of its
// positions for each of `arrays` arrays (1 for MLA latent entries, 2 for GQA keys and values):
//   float arena[n_blocks][arrays][layers][block_tokens][width]
// so for a fixed (array, layer) the rows of one block are contiguous with stride `width`, and the
// same rows of block b start b * block_floats() floats after those of block 0.
// The arena is one anonymous mmap (MAP_NORESERVE): pages are committed only when first written,
// so a large budget costs address space, not memory, until it is used. Fresh pages read as 0.
// Grow adds blocks at the end (mremap: the arena may move, its contents stay). Commit faults a
// block's pages for some positions in ahead of their first write, in one call per run of memory
// (MADV_POPULATE_WRITE): a page fault per 4 KiB inside a decode step cost a median 13.5 us per
// layer and token on a V2-Lite decode (AMD Zen 5 guest), 0.3 ms of a 29 ms token.
//
// Invariants: block ids are int32 indices in [0, n_blocks); block_tokens, layers, width and arrays
// are fixed at creation; n_blocks only grows. Addresses (row) are valid until the next Grow.
// Thread safety: the storage is shared by the caches of one rank; distinct blocks may be written
// concurrently, and a block is written only by the one sequence that owns it (shared prefix
// blocks are read-only once filled). Grow only while nothing reads or writes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/status.h"

namespace moerun {

class KvBlockStorage {
 public:
  // n_blocks >= 1 (< 2^31), block_tokens >= 1, layers >= 1, width >= 1 floats per position per
  // layer per array, arrays 1 or 2. Fails (naming the sizes) when the arena cannot be reserved.
  static StatusOr<std::shared_ptr<KvBlockStorage>> Create(int64_t n_blocks, int64_t block_tokens,
                                                          int64_t layers, int64_t width, int64_t arrays);
  ~KvBlockStorage();
  // At least `n_blocks` blocks (no-op when it has them); fails, unchanged, naming the sizes.
  Status Grow(int64_t n_blocks);
  KvBlockStorage(const KvBlockStorage&) = delete;
  KvBlockStorage& operator=(const KvBlockStorage&) = delete;

  int64_t n_blocks() const { return n_blocks_; }
  int64_t block_tokens() const { return block_tokens_; }
  int64_t layers() const { return layers_; }
  int64_t width() const { return width_; }
  int64_t arrays() const { return arrays_; }
  // Floats per block (all arrays, layers and positions): the distance between blocks.
  int64_t block_floats() const { return arrays_ * layers_ * block_tokens_ * width_; }
  size_t reserved_bytes() const { return bytes_; }

  // Commits the pages of positions [pos_begin, pos_end) of `block` in every array and layer, so
  // their first writes do not fault; contents unchanged. Best effort: a kernel without
  // MADV_POPULATE_WRITE (before Linux 5.14) leaves them to fault on first write as before.
  // REQUIRES: 0 <= pos_begin <= pos_end <= block_tokens, block in [0, n_blocks).
  void Commit(int32_t block, int64_t pos_begin, int64_t pos_end);

  // Row `pos_in_block` of (array, layer) in block `block`: [width] floats.
  float* row(int32_t block, int64_t array, int64_t layer, int64_t pos_in_block) {
    return data_ + block * block_floats() +
           ((array * layers_ + layer) * block_tokens_ + pos_in_block) * width_;
  }
  const float* row(int32_t block, int64_t array, int64_t layer, int64_t pos_in_block) const {
    return const_cast<KvBlockStorage*>(this)->row(block, array, layer, pos_in_block);
  }

 private:
  KvBlockStorage() = default;
  float* data_ = nullptr;  // [n_blocks][arrays][layers][block_tokens][width]
  size_t bytes_ = 0;
  int64_t n_blocks_ = 0, block_tokens_ = 0, layers_ = 0, width_ = 0, arrays_ = 0;
};

}  // namespace moerun
