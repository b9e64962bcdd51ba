#include "moe/dispatch/dispatcher.h"

namespace moerun {

std::unique_ptr<Dispatcher> MakeDispatcher(const ParallelOptions& o) {
  // Tokens replicated over the world: every rank already holds every token it computes for.
  if (o.dp == 1 && !o.sp) return MakeLocalDispatch(o);
  if (o.dispatch == DispatchKind::kAllToAll) return MakeAllToAllDispatch(o);
  return MakeAllGatherDispatch(o);
}

}  // namespace moerun
