#include "comm/communicator.h"

namespace moerun {

size_t ReduceTypeSize(ReduceType t) { return t == ReduceType::kF32Sum ? 4 : 16; }

StatusOr<std::vector<uint64_t>> Communicator::AllGatherValue(uint64_t value) {
  std::vector<uint64_t> all(static_cast<size_t>(size()));
  std::vector<size_t> bytes(static_cast<size_t>(size()), sizeof(uint64_t));
  RETURN_IF_ERROR(AllGather(&value, all.data(), bytes));
  return all;
}

}  // namespace moerun
