#include "parallel/transition.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace moerun {
namespace {

// memcpy that accepts the null pointers of empty buffers.
void Copy(void* dst, const void* src, size_t n) {
  if (n > 0) std::memcpy(dst, src, n);
}

Status CheckShards(const ParallelLayout& layout, Group g, std::span<const int64_t> shards, int64_t mine,
                   const std::string& what) {
  if (static_cast<int>(shards.size()) != layout.GroupSize(g)) {
    return Internal("{}: {} shard sizes given for a group {} of {} ranks", what, shards.size(), GroupName(g),
                    layout.GroupSize(g));
  }
  if (shards[static_cast<size_t>(layout.GroupRank(g))] != mine) {
    return Internal("{}: this rank's shard holds {}, the shard list says {}", what, mine,
                    shards[static_cast<size_t>(layout.GroupRank(g))]);
  }
  return Status::Ok();
}

Status AllGather(const ParallelLayout& layout, StatedBuffer* buf, StatedBuffer* out,
                 std::span<const int64_t> shards, const std::string& what) {
  const Group g = buf->state.group;
  const bool columns = buf->state.kind == StateKind::kColumnShard;
  RETURN_IF_ERROR(CheckShards(layout, g, shards, columns ? buf->cols : buf->rows, what));
  int64_t total = 0;
  for (int64_t s : shards) total += s;
  const int64_t want_rows = columns ? buf->rows : total, want_cols = columns ? total : buf->cols;
  if (out == nullptr || out->rows != want_rows || out->cols != want_cols || out->type != buf->type) {
    return Internal("{}: all_gather needs an output of [{}, {}]", what, want_rows, want_cols);
  }
  const size_t eb = buf->elem_bytes();
  const int64_t other = columns ? buf->rows : buf->cols;  // the unsharded dimension
  std::vector<size_t> bytes;
  for (int64_t s : shards) bytes.push_back(static_cast<size_t>(s * other) * eb);
  if (!columns) {  // rank blocks are consecutive rows: gather straight into out
    if (layout.GroupSize(g) == 1) {
      Copy(out->data, buf->data, bytes[0]);
    } else {
      RETURN_IF_ERROR(layout.Comm(g).AllGather(buf->data, out->data, bytes));
    }
    return Status::Ok();
  }
  // Column shards: gather [rank][rows, cols_q] blocks, then interleave into [rows, total].
  std::vector<char> all(static_cast<size_t>(total * other) * eb);
  if (layout.GroupSize(g) == 1) {
    Copy(all.data(), buf->data, bytes[0]);
  } else {
    RETURN_IF_ERROR(layout.Comm(g).AllGather(buf->data, all.data(), bytes));
  }
  char* dst = static_cast<char*>(out->data);
  size_t offset = 0;
  int64_t c0 = 0;
  for (int64_t s : shards) {
    for (int64_t r = 0; r < other; ++r) {
      Copy(dst + static_cast<size_t>(r * total + c0) * eb,
           all.data() + offset + static_cast<size_t>(r * s) * eb, static_cast<size_t>(s) * eb);
    }
    offset += static_cast<size_t>(s * other) * eb;
    c0 += s;
  }
  return Status::Ok();
}

Status ReduceScatter(const ParallelLayout& layout, StatedBuffer* buf, StatedBuffer* out,
                     std::span<const int64_t> shards, const std::string& what) {
  const Group g = buf->state.group;
  int64_t total = 0;
  for (int64_t s : shards) total += s;
  if (static_cast<int>(shards.size()) != layout.GroupSize(g) || total != buf->rows) {
    return Internal("{}: reduce_scatter of {} rows over shards summing to {} on {} ranks", what, buf->rows,
                    total, shards.size());
  }
  const int64_t mine = shards[static_cast<size_t>(layout.GroupRank(g))];
  if (out == nullptr || out->rows != mine || out->cols != buf->cols || out->type != buf->type) {
    return Internal("{}: reduce_scatter needs an output of [{}, {}]", what, mine, buf->cols);
  }
  std::vector<size_t> counts;
  for (int64_t s : shards) counts.push_back(static_cast<size_t>(s * buf->cols));
  if (layout.GroupSize(g) == 1) {
    Copy(out->data, buf->data, counts[0] * buf->elem_bytes());
    return Status::Ok();
  }
  return layout.Comm(g).ReduceScatter(buf->data, out->data, counts, buf->type);
}

}  // namespace

Status Transition(const ParallelLayout& layout, StatedBuffer* buf, const ReductionState& target,
                  const std::string& what, StatedBuffer* out, std::span<const int64_t> shards) {
  ASSIGN_OR_RETURN(Collective op, PlanTransition(buf->state, target, what));
  if (op == Collective::kNone) return Status::Ok();
  const Group g = buf->state.group;
  CollectiveLabel label(layout.log(), what, buf->state.ToString(), target.ToString());
  switch (op) {
    case Collective::kAllReduce:
      if (layout.GroupSize(g) > 1) {
        RETURN_IF_ERROR(
            layout.Comm(g).AllReduce(buf->data, static_cast<size_t>(buf->rows * buf->cols), buf->type));
      }
      buf->state = target;
      return Status::Ok();
    case Collective::kAllGather:
      RETURN_IF_ERROR(AllGather(layout, buf, out, shards, what));
      out->state = target;
      return Status::Ok();
    case Collective::kReduceScatter:
      RETURN_IF_ERROR(ReduceScatter(layout, buf, out, shards, what));
      out->state = target;
      return Status::Ok();
    case Collective::kNone:
      break;
  }
  return Status::Ok();
}

Status AllReduceOrRefuse(const ParallelLayout& layout, StatedBuffer* buf, const std::string& what) {
  const ReductionState& s = buf->state;
  const Group g = s.group;
  if (s.kind == StateKind::kPartial) return Transition(layout, buf, ReductionState::Replicated(g), what);
  if (!layout.options().disable_state_checks) {
    return InvalidArgument(
        "{}: all_reduce over {} refused: the output is {}, {}", what, GroupName(g), s.ToString(),
        s.kind == StateKind::kReplicated   ? "and reducing it again multiplies it by the group size"
        : s.kind == StateKind::kTokenShard ? "and summing token shards adds unrelated tokens"
                                           : "and summing column shards adds unrelated columns");
  }
  // Checks off (fault injection): sum the rows every rank has, whatever they hold; keep the state.
  if (layout.GroupSize(g) == 1) return Status::Ok();
  CollectiveLabel label(layout.log(), what + " (state checks disabled)", s.ToString(), s.ToString());
  Communicator& comm = layout.Comm(g);
  ASSIGN_OR_RETURN(std::vector<uint64_t> rows, comm.AllGatherValue(static_cast<uint64_t>(buf->rows)));
  const uint64_t common = *std::min_element(rows.begin(), rows.end());
  return comm.AllReduce(buf->data, static_cast<size_t>(common) * static_cast<size_t>(buf->cols), buf->type);
}

}  // namespace moerun
