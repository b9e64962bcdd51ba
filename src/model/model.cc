#include "model/model.h"

namespace moerun {

const char* CacheKindName(CacheKind kind) {
  switch (kind) {
    case CacheKind::kLatentMla:
      return "latent MLA";
    case CacheKind::kGqaKv:
      return "GQA K/V";
  }
  return "?";
}

Status Model::Forward(std::span<const int32_t> tokens, ModelCache* cache, bool all_logits,
                      std::vector<float>* logits) {
  if (tokens.empty() && world_size() == 1) return InvalidArgument("no tokens to run");
  const SequenceChunk chunk{cache, tokens};
  return ForwardBatch(std::span<const SequenceChunk>(&chunk, 1), all_logits, logits);
}

}  // namespace moerun
