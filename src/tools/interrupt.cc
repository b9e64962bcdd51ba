#include "tools/interrupt.h"

#include <atomic>
#include <csignal>

namespace moerun {
namespace {

std::atomic<int> g_signal{0};
struct sigaction g_old_int, g_old_term;

void OnSignal(int sig) {
  if (g_signal.exchange(sig) != 0) {  // the second one: default action now
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

InterruptScope::InterruptScope() {
  g_signal.store(0);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptScope::~InterruptScope() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

int InterruptScope::Received() { return g_signal.load(); }

}  // namespace moerun
