// Atomic file writes: the bytes go to "<path>.tmp.<pid>" in the same directory, are flushed,
// then renamed over <path>. A failure removes the temporary file, so a reader sees either the
// old file or the complete new one, never a half-written file.
// Thread safety: independent calls on distinct paths are safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace moerun {

Status WriteFileAtomically(const std::string& path, std::string_view bytes);

// Opens `path` read-only (O_CLOEXEC) and returns the descriptor. NotFound / IOError name the path.
StatusOr<int> OpenReadOnly(const std::string& path);

// A regular file mapped read-only (MAP_PRIVATE); addr is null for an empty file. The caller owns
// the mapping (munmap(addr, size)). Errors name the path: not a regular file, stat/mmap failure.
struct ReadOnlyMapping {
  void* addr = nullptr;
  uint64_t size = 0;
};
StatusOr<ReadOnlyMapping> MapReadOnly(const std::string& path);

// Reads a whole (small) file, e.g. config.json. NotFound / IOError name the path.
StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace moerun
