#include "comm/rank_agreement.h"

#include <cstring>

namespace moerun {
namespace {

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof v); }

bool GetU32(std::string_view* in, uint32_t* v) {
  if (in->size() < sizeof *v) return false;
  std::memcpy(v, in->data(), sizeof *v);
  in->remove_prefix(sizeof *v);
  return true;
}

bool GetString(std::string_view* in, std::string* s) {
  uint32_t n = 0;
  if (!GetU32(in, &n) || in->size() < n) return false;
  s->assign(in->data(), n);
  in->remove_prefix(n);
  return true;
}

// The first rank whose value of `name` differs from rank 0's (absent counts), and how many do.
struct Disagreement {
  int first = -1, count = 0;
};
Disagreement FindDisagreement(const std::vector<RankFingerprint>& ranks, const std::string& name,
                              const std::string* want) {
  Disagreement d;
  for (size_t r = 1; r < ranks.size(); ++r) {
    const std::string* got = ranks[r].Find(name);
    const bool same = (got == nullptr) == (want == nullptr) && (got == nullptr || *got == *want);
    if (same) continue;
    if (d.first < 0) d.first = static_cast<int>(r);
    ++d.count;
  }
  return d;
}

std::string Quoted(const std::string* v) { return v == nullptr ? "no such field" : "'" + *v + "'"; }

Status DisagreementError(const std::vector<RankFingerprint>& ranks, const std::string& name,
                         const Disagreement& d) {
  const std::string* a = ranks[0].Find(name);
  const std::string* b = ranks[static_cast<size_t>(d.first)].Find(name);
  return InvalidArgument(
      "ranks disagree on '{}': rank 0 has {}, rank {} has {} ({} of {} ranks differ from rank 0; every rank "
      "must be started with the same flags, model files and inputs)",
      name, Quoted(a), d.first, Quoted(b), d.count, ranks.size());
}

}  // namespace

std::string DigestOf(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return fmt::format("fnv1a64 {:016x}", h);
}

std::string ShownOrDigest(std::string_view text) {
  bool printable = text.size() <= 80;
  for (const char c : text) printable = printable && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  if (printable) return std::string(text);
  return fmt::format("{} bytes, {}", text.size(), DigestOf(text));
}

void RankFingerprint::Add(std::string name, std::string value) {
  for (Field& f : fields_) {
    if (f.name == name) {
      f.value = std::move(value);
      return;
    }
  }
  fields_.push_back({std::move(name), std::move(value)});
}

const std::string* RankFingerprint::Find(std::string_view name) const {
  for (const Field& f : fields_)
    if (f.name == name) return &f.value;
  return nullptr;
}

std::string RankFingerprint::Serialize() const {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(fields_.size()));
  for (const Field& f : fields_) {
    PutU32(&out, static_cast<uint32_t>(f.name.size()));
    out += f.name;
    PutU32(&out, static_cast<uint32_t>(f.value.size()));
    out += f.value;
  }
  return out;
}

StatusOr<RankFingerprint> RankFingerprint::Parse(std::string_view bytes) {
  RankFingerprint fp;
  uint32_t n = 0;
  if (!GetU32(&bytes, &n))
    return Corruption("rank fingerprint: {} bytes, too short for the field count", bytes.size());
  for (uint32_t i = 0; i < n; ++i) {
    Field f;
    if (!GetString(&bytes, &f.name) || !GetString(&bytes, &f.value)) {
      return Corruption("rank fingerprint: field {} of {} is cut short", i, n);
    }
    fp.fields_.push_back(std::move(f));
  }
  if (!bytes.empty()) return Corruption("rank fingerprint: {} bytes after the last field", bytes.size());
  return fp;
}

Status CompareFingerprints(const std::vector<RankFingerprint>& ranks) {
  if (ranks.size() < 2) return Status::Ok();
  for (const RankFingerprint::Field& f : ranks[0].fields()) {
    const Disagreement d = FindDisagreement(ranks, f.name, &f.value);
    if (d.first >= 0) return DisagreementError(ranks, f.name, d);
  }
  for (size_t r = 1; r < ranks.size(); ++r) {  // fields rank 0 does not have
    for (const RankFingerprint::Field& f : ranks[r].fields()) {
      if (ranks[0].Find(f.name) == nullptr)
        return DisagreementError(ranks, f.name, FindDisagreement(ranks, f.name, nullptr));
    }
  }
  return Status::Ok();
}

Status CheckRanksAgree(Communicator& world, const RankFingerprint& mine) {
  if (world.size() == 1) return Status::Ok();
  const std::string bytes = mine.Serialize();
  ASSIGN_OR_RETURN(std::vector<uint64_t> sizes, world.AllGatherValue(bytes.size()));
  std::vector<size_t> recv_bytes(sizes.begin(), sizes.end());
  size_t total = 0;
  for (size_t s : recv_bytes) total += s;
  std::string all(total, '\0');
  RETURN_IF_ERROR(world.AllGather(bytes.data(), all.data(), recv_bytes));
  std::vector<RankFingerprint> ranks;
  size_t at = 0;
  for (size_t r = 0; r < recv_bytes.size(); ++r) {
    ASSIGN_OR_RETURN(RankFingerprint fp,
                     RankFingerprint::Parse(std::string_view(all).substr(at, recv_bytes[r])));
    ranks.push_back(std::move(fp));
    at += recv_bytes[r];
  }
  return CompareFingerprints(ranks);
}

}  // namespace moerun
