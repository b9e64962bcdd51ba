// RankContext: what every layer of one rank shares: the layout (coordinates and communicators,
// made once), the thread pool, and scratch objects that layers run one after another can reuse
// (e.g. one set of MoE expert buffers for a 27-layer model instead of 27).
//
// Scratch<T>(make) returns the rank's one T, made by make() on first use; the upper floors
// (moe/, model/) keep their own scratch types this way without this floor knowing them.
//
// Thread safety: one RankContext per rank, used by that rank's thread (layers run sequentially).
// The pool is shared with the layers' parallel loops, which never issue collectives.
#pragma once

#include <map>
#include <memory>
#include <typeindex>
#include <typeinfo>
#include <utility>

#include "core/thread_pool.h"
#include "parallel/layout.h"

namespace moerun {

class RankContext {
 public:
  // `pool` may be null (run inline) and must outlive the context.
  RankContext(std::unique_ptr<ParallelLayout> layout, ThreadPool* pool)
      : layout_(std::move(layout)), pool_(pool) {}

  // Validates the options, splits `world` once and makes the context of this rank.
  static StatusOr<std::shared_ptr<RankContext>> Create(const ParallelOptions& options, const LayoutDims& dims,
                                                       Communicator& world, ThreadPool* pool) {
    ASSIGN_OR_RETURN(std::unique_ptr<ParallelLayout> layout, ParallelLayout::Create(options, dims, world));
    return std::make_shared<RankContext>(std::move(layout), pool);
  }

  const ParallelLayout& layout() const { return *layout_; }
  const ParallelOptions& options() const { return layout_->options(); }
  ThreadPool* pool() const { return pool_; }

  template <typename T, typename Make>
  T& Scratch(Make&& make) {
    std::shared_ptr<void>& slot = scratch_[std::type_index(typeid(T))];
    if (!slot) slot = std::shared_ptr<T>(make());
    return *static_cast<T*>(slot.get());
  }

 private:
  std::unique_ptr<ParallelLayout> layout_;
  ThreadPool* pool_;
  std::map<std::type_index, std::shared_ptr<void>> scratch_;
};

}  // namespace moerun
