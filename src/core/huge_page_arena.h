// StreamedBytes: memory for large, long-lived buffers that are read from end to end again and again
// (packed weights: every decoded token streams them; the read-bandwidth probe, which must measure
// the same kind of memory). Buffers of at least kMinArenaBytes are carved back to back out of
// 2 MiB-aligned anonymous mappings advised MADV_HUGEPAGE, so that with transparent huge pages
// ("madvise" or "always" in /sys/kernel/mm/transparent_hugepage/enabled) one TLB entry covers
// 2 MiB of weights instead of 4 KiB. On a Zen 5 two threads read about 10 % more per second from
// such memory (85 vs 77 GB/s); a V2-Lite expert's down projection (1.6 MB at q4_0) only reaches
// whole huge pages because experts are allocated back to back, not one mapping each.
//
// Invariants: every buffer starts zeroed and is 64-byte aligned (4096-byte aligned in a mapping);
// buffers never overlap. Mappings reserve 1 GiB of address space each (MAP_NORESERVE: only touched
// pages cost memory; under strict overcommit, vm.overcommit_memory = 2, the reservation counts
// against the commit limit); a buffer over half of that gets a mapping of its own, without
// MAP_NORESERVE, so an impossible size is refused like operator new's. Freeing a buffer
// returns its pages to the kernel (MADV_DONTNEED over exactly its own pages, so a neighbour sharing
// a huge page keeps its bytes; khugepaged may later re-collapse such a huge page, zero-filled); a
// mapping the arena has moved on from is unmapped when its last buffer is freed. Smaller buffers,
// or any buffer when a mapping cannot be made (e.g. under `ulimit -v`), come from operator new
// (then zeroed) instead: huge pages are an optimisation, never a reason to fail.
//
// Thread safety: AllocateStreamedBytes may be called from any thread; a StreamedBytes is owned by
// one object like a unique_ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace moerun {

class HugePageMapping;  // one mapping buffers are carved from (huge_page_arena.cc)

// Releases a buffer: MADV_DONTNEED over its pages and drops its mapping's reference, or
// operator delete for a buffer from operator new (mapping == nullptr). The reference is dropped in
// the call itself, so StreamedBytes::reset() also unmaps a mapping no other buffer uses.
struct StreamedBytesDeleter {
  mutable std::shared_ptr<HugePageMapping> mapping;
  size_t bytes = 0;  // the buffer's reserved bytes (a multiple of 4096 in a mapping)
  void operator()(uint8_t* p) const;
};
using StreamedBytes = std::unique_ptr<uint8_t[], StreamedBytesDeleter>;

// Buffers below this many bytes come from operator new (a tiny weight would waste most of a 4 KiB
// page, and cannot fill a huge page anyway).
inline constexpr size_t kMinArenaBytes = size_t{64} << 10;

// A zeroed buffer of `bytes` bytes (see above). Throws std::bad_alloc only if operator new does.
StreamedBytes AllocateStreamedBytes(size_t bytes);

// True if `p` lies in a huge-page-advised mapping (what the tests check).
bool InHugePageMapping(const StreamedBytes& p);

}  // namespace moerun
