#include "core/signals.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>

namespace moerun {
namespace {

// A fixed text held in relaxed atomic words, so the handler may read it while a thread writes
// (the board's version says whether the copy is whole).
template <size_t kWords>
struct AtomicText {
  std::atomic<uint64_t> words[kWords] = {};
  std::atomic<size_t> size{0};

  // Keeps the first kWords * 8 bytes of text.
  void Store(std::string_view text) {
    uint64_t w[kWords] = {};
    const size_t n = std::min(text.size(), sizeof(w));
    if (n > 0) std::memcpy(w, text.data(), n);  // an empty view's data() may be null
    for (size_t i = 0; i < kWords; ++i) words[i].store(w[i], std::memory_order_relaxed);
    size.store(n, std::memory_order_relaxed);
  }
  // Copies the text into out (kWords * 8 bytes); returns its size.
  size_t Load(char* out) const {
    for (size_t i = 0; i < kWords; ++i) {
      const uint64_t w = words[i].load(std::memory_order_relaxed);
      std::memcpy(out + 8 * i, &w, 8);
    }
    return std::min(size.load(std::memory_order_relaxed), kWords * 8);
  }
};

// The publishing rank's collective: a seqlock (version odd while a write is in progress).
struct Board {
  std::atomic<uint64_t> version{0};
  std::atomic<int> rank{-1};
  std::atomic<uint64_t> seq{0};
  std::atomic<bool> in_flight{false};
  AtomicText<8> op;      // "all_reduce on group 'tp'"
  AtomicText<24> label;  // "layer 3 o_proj output"
};
Board g_board;
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

std::atomic<bool> g_scope_active{false};
std::atomic<int> g_interrupt{0};

// Appends to a fixed buffer, dropping what does not fit (async-signal-safe).
struct LineWriter {
  char* buf;
  size_t cap, n = 0;
  void Add(std::string_view s) {
    const size_t k = std::min(s.size(), cap - n);
    if (k > 0) std::memcpy(buf + n, s.data(), k);  // an empty view's data() may be null
    n += k;
  }
  void AddNumber(uint64_t v) {
    char digits[24];
    size_t k = 0;
    do {
      digits[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (k > 0 && n < cap) buf[n++] = digits[--k];
  }
};

std::string_view SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "a signal";
  }
}

void OnSignal(int sig) {
  const int saved_errno = errno;
  if (g_scope_active.load() && g_interrupt.exchange(sig) == 0) {  // the first one: a flag only
    errno = saved_errno;
    return;
  }
  char line[512];
  const size_t n = FormatSignalLine(sig, line, sizeof(line));
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line, n);
  std::signal(sig, SIG_DFL);  // the default action once this handler returns: the process ends
  std::raise(sig);
  errno = saved_errno;
}

void SetHandler(int sig, struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(sig, &sa, old);
}

struct sigaction g_old_int, g_old_term;

}  // namespace

void InstallSignalReport() {
  SetHandler(SIGINT, nullptr);
  SetHandler(SIGTERM, nullptr);
}

void PublishCollectiveBegin(int rank, std::string_view op, std::string_view group, uint64_t seq,
                            std::string_view label) {
  g_board.version.fetch_add(1, std::memory_order_acq_rel);  // odd: writing
  g_board.rank.store(rank, std::memory_order_relaxed);
  g_board.seq.store(seq, std::memory_order_relaxed);
  char what[64];
  LineWriter w{what, sizeof(what)};
  w.Add(op);
  w.Add(" on group '");
  w.Add(group);
  w.Add("'");
  g_board.op.Store(std::string_view(what, w.n));
  g_board.label.Store(label);
  g_board.in_flight.store(true, std::memory_order_relaxed);
  g_board.version.fetch_add(1, std::memory_order_release);
}

void PublishCollectiveEnd() { g_board.in_flight.store(false, std::memory_order_release); }

void ResetCollectivePublication() {
  g_board.version.fetch_add(1, std::memory_order_acq_rel);
  g_board.rank.store(-1, std::memory_order_relaxed);
  g_board.seq.store(0, std::memory_order_relaxed);
  g_board.in_flight.store(false, std::memory_order_relaxed);
  g_board.op.Store({});
  g_board.label.Store({});
  g_board.version.fetch_add(1, std::memory_order_release);
}

size_t FormatSignalLine(int sig, char* buf, size_t size) {
  if (size == 0) return 0;
  const uint64_t v0 = g_board.version.load(std::memory_order_acquire);
  const int rank = g_board.rank.load(std::memory_order_relaxed);
  const uint64_t seq = g_board.seq.load(std::memory_order_relaxed);
  const bool in_flight = g_board.in_flight.load(std::memory_order_relaxed);
  char op[8 * 8], label[24 * 8];
  const size_t n_op = g_board.op.Load(op), n_label = g_board.label.Load(label);
  std::atomic_thread_fence(std::memory_order_acquire);
  const bool whole = (v0 % 2 == 0) && g_board.version.load(std::memory_order_relaxed) == v0;

  LineWriter w{buf, size - 1};  // room for the newline
  w.Add("moerun: ");
  if (rank >= 0) {
    w.Add("rank ");
    w.AddNumber(static_cast<uint64_t>(rank));
    w.Add(": ");
  }
  w.Add(SignalName(sig));
  w.Add(" received");
  const std::string_view lab(label, n_label);
  if (seq == 0) {  // one rank, or before the first collective: nothing more to say
  } else if (!whole) {
    w.Add(" around collective #");
    w.AddNumber(seq);
  } else if (in_flight) {
    w.Add(" during ");
    w.Add(std::string_view(op, n_op));
    w.Add(" [collective #");
    w.AddNumber(seq);
    w.Add(" of this rank");
    if (!lab.empty()) {
      w.Add(": ");
      w.Add(lab);
    }
    w.Add("]");
  } else {
    w.Add(" while computing after collective #");
    w.AddNumber(seq);
    if (!lab.empty()) {
      w.Add(" (");
      w.Add(lab);
      w.Add(")");
    }
  }
  buf[w.n++] = '\n';
  return w.n;
}

InterruptScope::InterruptScope() {
  g_interrupt.store(0);
  g_scope_active.store(true);
  SetHandler(SIGINT, &g_old_int);
  SetHandler(SIGTERM, &g_old_term);
}

InterruptScope::~InterruptScope() {
  g_scope_active.store(false);
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

int InterruptScope::Received() { return g_interrupt.load(); }

}  // namespace moerun
