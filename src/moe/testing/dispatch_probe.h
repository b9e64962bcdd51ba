// Test helpers that act on a layer's dispatcher from outside the production classes:
//
//   ProbeDispatcher    a decorator that keeps the wrapped dispatcher's kind, name and declared state
//                      and reports every dispatched row as it reaches the rank computing its
//                      expert: probe(source world rank, the row's hidden state, global expert id).
//   InstallDispatchProbe  wraps a layer's bound dispatcher with it.
//   UnbindDispatcher   removes a layer's dispatcher: its routed state can then not be read and
//                      Forward fails (the declaration belongs to the bound dispatcher).
//
// Thread safety: install before Forward, on the rank's thread; the probe runs on that thread.
#pragma once

#include <functional>
#include <memory>

#include "moe/dispatch/dispatcher.h"
#include "moe/parallel_moe.h"

namespace moerun {

using DispatchProbe = std::function<void(int source_rank, const float* row, int32_t expert)>;

std::unique_ptr<Dispatcher> ProbeDispatcher(std::unique_ptr<Dispatcher> inner, DispatchProbe probe);
void InstallDispatchProbe(ParallelMoe& layer, DispatchProbe probe);
void UnbindDispatcher(ParallelMoe& layer);

}  // namespace moerun
