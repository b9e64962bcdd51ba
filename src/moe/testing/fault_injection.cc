#include "moe/testing/fault_injection.h"

#include "parallel/transition.h"

namespace moerun {
namespace {

Status ReduceOnce(const ParallelLayout& layout, const PartOps& parts, MoePart* part,
                  const std::string& what) {
  StatedBuffer view = part->View(parts.deterministic());
  RETURN_IF_ERROR(AllReduceOrRefuse(layout, &view, what));
  part->state = view.state;
  return Status::Ok();
}

class ReduceSharedAgain final : public MoeLayerHook {
 public:
  Status OnParts(const ParallelLayout& layout, const PartOps& parts, MoePart* /*routed*/, MoePart* shared,
                 bool has_shared, const std::string& layer) override {
    if (!has_shared) return Status::Ok();
    return ReduceOnce(layout, parts, shared, layer + " shared output (injected fault)");
  }
};

class ReduceOutputAgain final : public MoeLayerHook {
 public:
  Status OnOutput(const ParallelLayout& layout, const PartOps& parts, MoePart* out,
                  const std::string& layer) override {
    return ReduceOnce(layout, parts, out, layer + " output (fault injection)");
  }
};

}  // namespace

std::unique_ptr<MoeLayerHook> MakeReduceSharedAgain() { return std::make_unique<ReduceSharedAgain>(); }
std::unique_ptr<MoeLayerHook> MakeReduceOutputAgain() { return std::make_unique<ReduceOutputAgain>(); }

}  // namespace moerun
