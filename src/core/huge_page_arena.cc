#include "core/huge_page_arena.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>

namespace moerun {

namespace {

constexpr size_t kPageBytes = 4096;
constexpr size_t kHugePageBytes = size_t{2} << 20;
// Address space reserved per mapping; only touched pages cost memory (MAP_NORESERVE).
constexpr size_t kMappingBytes = size_t{1} << 30;
constexpr size_t kFallbackAlignment = 64;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

// [base, base + size): 2 MiB aligned, advised MADV_HUGEPAGE; buffers are carved from `used` on.
class HugePageMapping {
 public:
  // nullptr if the kernel refuses the mapping. `noreserve`: MAP_NORESERVE (the shared mapping, whose
  // address space is mostly never touched); without it the kernel's overcommit check refuses an
  // impossible size as it would refuse operator new's.
  static std::shared_ptr<HugePageMapping> Create(size_t size, bool noreserve) {
    // Over-map by one huge page, then unmap the unaligned head and the tail.
    const size_t span = size + kHugePageBytes;
    void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0), -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const size_t head = RoundUp(start, kHugePageBytes) - start;  // bytes before the first 2 MiB boundary
    uint8_t* p = static_cast<uint8_t*>(raw) + head;
    if (head > 0) ::munmap(raw, head);
    const size_t tail = span - head - size;
    if (tail > 0) ::munmap(p + size, tail);
    // Failure (a kernel without THP) leaves ordinary pages: still correct.
    (void)::madvise(p, size, MADV_HUGEPAGE);
    return std::shared_ptr<HugePageMapping>(new HugePageMapping(p, size));
  }
  ~HugePageMapping() { ::munmap(base_, size_); }
  HugePageMapping(const HugePageMapping&) = delete;
  HugePageMapping& operator=(const HugePageMapping&) = delete;

  // The next `bytes` (a multiple of 4096), or nullptr if they do not fit. Caller holds the arena lock.
  uint8_t* Carve(size_t bytes) {
    if (bytes > size_ - used_) return nullptr;
    uint8_t* p = base_ + used_;
    used_ += bytes;
    return p;
  }
  bool Contains(const uint8_t* p) const { return p >= base_ && p < base_ + size_; }

 private:
  HugePageMapping(uint8_t* base, size_t size) : base_(base), size_(size) {}
  uint8_t* base_;
  size_t size_;
  size_t used_ = 0;
};

namespace {

// The mapping small-enough buffers are carved from, shared by the whole process.
struct Arena {
  std::mutex mu;
  std::shared_ptr<HugePageMapping> current;  // guarded by mu
};

Arena& TheArena() {
  static Arena* arena = new Arena();  // never destroyed: buffers may outlive static destructors
  return *arena;
}

StreamedBytes FromOperatorNew(size_t bytes) {
  auto* p =
      static_cast<uint8_t*>(::operator new[](bytes == 0 ? 1 : bytes, std::align_val_t(kFallbackAlignment)));
  std::memset(p, 0, bytes);
  return StreamedBytes(p, StreamedBytesDeleter{nullptr, bytes});
}

}  // namespace

void StreamedBytesDeleter::operator()(uint8_t* p) const {
  if (mapping == nullptr) {
    ::operator delete[](p, std::align_val_t(kFallbackAlignment));
    return;
  }
  // Exactly this buffer's pages: p and bytes are multiples of 4096.
  (void)::madvise(p, bytes, MADV_DONTNEED);
  mapping.reset();
}

StreamedBytes AllocateStreamedBytes(size_t bytes) {
  // Small buffers, and sizes no mapping could hold (operator new then throws std::bad_alloc).
  if (bytes < kMinArenaBytes || bytes > SIZE_MAX - 2 * kHugePageBytes) return FromOperatorNew(bytes);
  const size_t reserved = RoundUp(bytes, kPageBytes);
  if (reserved > kMappingBytes / 2) {  // a buffer this large gets its own mapping
    std::shared_ptr<HugePageMapping> own = HugePageMapping::Create(RoundUp(reserved, kHugePageBytes), false);
    if (own == nullptr) return FromOperatorNew(bytes);
    uint8_t* p = own->Carve(reserved);
    return StreamedBytes(p, StreamedBytesDeleter{std::move(own), reserved});
  }
  Arena& arena = TheArena();
  std::lock_guard<std::mutex> lock(arena.mu);
  uint8_t* p = arena.current != nullptr ? arena.current->Carve(reserved) : nullptr;
  if (p == nullptr) {
    arena.current = HugePageMapping::Create(kMappingBytes, true);
    if (arena.current == nullptr) return FromOperatorNew(bytes);
    p = arena.current->Carve(reserved);
  }
  return StreamedBytes(p, StreamedBytesDeleter{arena.current, reserved});
}

bool InHugePageMapping(const StreamedBytes& p) {
  return p.get_deleter().mapping != nullptr && p.get_deleter().mapping->Contains(p.get());
}

}  // namespace moerun
