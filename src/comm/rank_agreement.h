// Rank agreement: at start-up every rank checks that all ranks were started with the same things.
//
// A RankFingerprint is an ordered list of named string fields: the flags that must agree (layout,
// weight format, -n, seed, ...), the identity of the model files (sizes and a digest of their
// headers) and the content of the inputs (prompt ids, task file). CheckRanksAgree gathers every
// rank's list over the world communicator (two all-gathers: the sizes, then the bytes) and compares
// each rank's list with rank 0's on every rank, so every rank reaches the same verdict from the same
// data: all return OK, or all return the same InvalidArgument naming the first field that differs
// (in rank 0's field order), the first rank that differs and both values, e.g.
//   ranks disagree on '-n': rank 0 has '8', rank 1 has '9' (1 of 2 ranks differ from rank 0; every
//   rank must be started with the same flags, model files and inputs)
// Fields that may legitimately differ (threads, output paths, --stats) are simply not added.
//
// Invariants: field names are unique within a fingerprint (Add replaces an existing name's value).
// Thread safety: a RankFingerprint is a plain value; CheckRanksAgree is a collective (call it from
// the rank's own thread, on every rank, before any other collective that depends on the fields).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"

namespace moerun {

// FNV-1a 64 of the bytes, as "fnv1a64 0123456789abcdef" (stable across builds and hosts).
std::string DigestOf(std::string_view bytes);
// The text itself when short and printable (<= 80 bytes), else "<N> bytes, fnv1a64 ...": a value
// that can be compared and still be read in an error message.
std::string ShownOrDigest(std::string_view text);

class RankFingerprint {
 public:
  struct Field {
    std::string name, value;
  };

  // Adds (or replaces) a field, e.g. Add("-n", "32").
  void Add(std::string name, std::string value);
  const std::vector<Field>& fields() const { return fields_; }
  const std::string* Find(std::string_view name) const;

  // Length-prefixed bytes of the fields (what ranks exchange), and back.
  std::string Serialize() const;
  static StatusOr<RankFingerprint> Parse(std::string_view bytes);

 private:
  std::vector<Field> fields_;
};

// Collective over `world`: OK on every rank when every rank's fingerprint equals rank 0's, else the
// same error on every rank (see the top comment). A peer that never arrives fails with the
// communicator's timeout.
Status CheckRanksAgree(Communicator& world, const RankFingerprint& mine);

// The verdict CheckRanksAgree reaches from the gathered fingerprints (index = rank).
Status CompareFingerprints(const std::vector<RankFingerprint>& ranks);

}  // namespace moerun
