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

// A temporary file of a writer that was killed (SIGKILL, power loss) stays behind; every atomic
// write first removes "<path>.tmp.<pid>" files whose process no longer exists.
Status WriteFileAtomically(const std::string& path, std::string_view bytes);

// Removes "<path>.tmp.<pid>" left by dead writers (pid not alive); returns how many. Best effort.
int RemoveStaleTemporaries(const std::string& path);

// Whether `path` can be written atomically, checked before a long computation: creates and removes
// its temporary file. The IOError names the path and the reason.
Status CheckWritable(const std::string& path);

// Opens `path` read-only (O_CLOEXEC) and returns the descriptor of a regular file. The open itself
// never blocks (O_NONBLOCK, cleared afterwards): a FIFO, device or socket is refused ("not a regular
// file") instead of waiting forever for a writer. NotFound / IOError / InvalidArgument name the path.
StatusOr<int> OpenReadOnly(const std::string& path);

// A regular file mapped read-only (MAP_PRIVATE); addr is null for an empty file. The caller owns
// the mapping (UnmapReadOnly). Errors name the path: not a regular file, stat/mmap failure. A
// SIGBUS in the mapping (the file truncated under the process) exits naming the file
// (io/mapping_guard.h).
struct ReadOnlyMapping {
  void* addr = nullptr;
  uint64_t size = 0;
};
StatusOr<ReadOnlyMapping> MapReadOnly(const std::string& path);
void UnmapReadOnly(void* addr, uint64_t size);

// The default bound of ReadFileToString: config.json, tokenizer.json, index.json and task files
// are text far below it (DeepSeek-V3's tokenizer.json is 7.8 MB).
inline constexpr uint64_t kMaxTextFileBytes = uint64_t{256} << 20;

// Reads a whole (small) regular file, e.g. config.json, of at most `max_bytes` bytes: a larger one is
// refused before anything is allocated. NotFound / IOError / InvalidArgument name the path (and the
// bound).
StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes = kMaxTextFileBytes);
// The first `n` bytes of a regular file (fewer at EOF; FIFOs and devices refused, so it never blocks
// on one). NotFound / IOError / InvalidArgument (not a regular file) name the path.
StatusOr<std::string> ReadFilePrefix(const std::string& path, uint64_t n);

}  // namespace moerun
