#include "io/mapping_guard.h"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>

namespace moerun {
namespace {

struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};  // end == 0: free
  char path[512] = {};
};

std::array<Slot, kMaxMappings> g_slots;
std::mutex g_mu;  // registration only; the handler never locks

void Write(const char* s) { (void)!::write(STDERR_FILENO, s, std::strlen(s)); }

void WriteNumber(uint64_t v) {
  char buf[24];
  int i = sizeof buf;
  buf[--i] = '\0';
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && i > 0);
  Write(buf + i);
}

void OnSigbus(int sig, siginfo_t* info, void*) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const Slot& s : g_slots) {
    const uintptr_t begin = s.begin.load(std::memory_order_acquire),
                    end = s.end.load(std::memory_order_acquire);
    if (end == 0 || addr < begin || addr >= end) continue;
    Write("moerun: error: ");
    Write(s.path);
    Write(" changed while mapped: reading byte ");
    WriteNumber(addr - begin);
    Write(" of ");
    WriteNumber(end - begin);
    Write(" failed (SIGBUS; was the file truncated or replaced in place?)\n");
    ::_exit(1);
  }
  ::signal(sig, SIG_DFL);  // not a mapped file: crash as before
  ::raise(sig);
}

void InstallHandler() {
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGBUS, &sa, nullptr);
}

}  // namespace

void RegisterMapping(const void* addr, uint64_t size, const std::string& path) {
  static std::once_flag once;
  std::call_once(once, InstallHandler);
  std::lock_guard<std::mutex> lock(g_mu);
  for (Slot& s : g_slots) {
    if (s.end.load(std::memory_order_relaxed) != 0) continue;
    std::strncpy(s.path, path.c_str(), sizeof s.path - 1);
    s.begin.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    s.end.store(reinterpret_cast<uintptr_t>(addr) + size, std::memory_order_release);
    return;
  }
}

void UnregisterMapping(const void* addr) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (Slot& s : g_slots) {
    if (s.end.load(std::memory_order_relaxed) != 0 &&
        s.begin.load(std::memory_order_relaxed) == reinterpret_cast<uintptr_t>(addr)) {
      s.end.store(0, std::memory_order_release);
      s.begin.store(0, std::memory_order_release);
    }
  }
}

}  // namespace moerun
