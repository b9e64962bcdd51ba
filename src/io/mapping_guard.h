// SIGBUS on mapped files: a file truncated (or shrunk) while moerun has it mapped makes the next
// read of a page past the new end raise SIGBUS, which would end the process as a bare "Bus error".
// Every read-only mapping registers here; the SIGBUS handler (installed on the first registration)
// looks the faulting address up, prints "moerun: error: <path> changed while mapped: reading byte
// <offset> of <size> failed (SIGBUS; was the file truncated?)" and exits with status 1. A SIGBUS
// outside every registered mapping keeps the default action (a crash: a bug, not a file).
// Invariants: at most kMaxMappings mappings are registered at once (more are left unguarded).
// Thread safety: Register / Unregister from any thread; the handler only reads atomics and the
// path bytes published before its slot's range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moerun {

inline constexpr size_t kMaxMappings = 1024;

void RegisterMapping(const void* addr, uint64_t size, const std::string& path);
void UnregisterMapping(const void* addr);

}  // namespace moerun
