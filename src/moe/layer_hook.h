// MoeLayerHook: a decorator of one MoE layer's forward pass, called at two points where the parts
// and their states are visible. Production layers run with none; fault injection and tests
// (moe/testing/) add theirs with ParallelMoe::AddHook. A hook that changes a part goes through the
// transition executor like everything else (parallel/transition.h), so the state checks refuse
// what they would refuse in the layer itself.
//
// Invariants: with any hook installed, the layer computes the shared part separately (never
// folded into the routed accumulation), so OnParts always sees both parts.
// Thread safety: called by the rank's thread during Forward.
#pragma once

#include <string>

#include "core/status.h"
#include "moe/moe_part.h"
#include "parallel/layout.h"

namespace moerun {

class MoeLayerHook {
 public:
  virtual ~MoeLayerHook() = default;
  // After the routed and shared parts are made, before they are reduced and added.
  virtual Status OnParts(const ParallelLayout& /*layout*/, const PartOps& /*parts*/, MoePart* /*routed*/,
                         MoePart* /*shared*/, bool /*has_shared*/, const std::string& /*layer*/) {
    return Status::Ok();
  }
  // After the output reached the requested state, before the layer checks it.
  virtual Status OnOutput(const ParallelLayout& /*layout*/, const PartOps& /*parts*/, MoePart* /*out*/,
                          const std::string& /*layer*/) {
    return Status::Ok();
  }
};

}  // namespace moerun
