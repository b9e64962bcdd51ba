// Interrupts of a long command (eval): SIGINT / SIGTERM set a flag the command polls between engine
// steps, so it can stop cleanly and write what it has (partial answers) instead of dying with
// nothing. A second signal while the first is being handled ends the process at once (the default
// action), so an interrupt can never hang.
// Thread safety: the handler only stores an atomic flag; Interrupted() may be read from any thread.
#pragma once

namespace moerun {

// While alive, SIGINT and SIGTERM set the flag instead of ending the process; the previous
// handlers come back on destruction. Not nested.
class InterruptScope {
 public:
  InterruptScope();
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

  // The signal received (SIGINT or SIGTERM), or 0.
  static int Received();
};

}  // namespace moerun
