// Typed, range-checked reads of config.json fields shared by the architecture parsers
// (model/model_config.cc, model/gqa_config.cc). A missing or null field takes the fallback (or is
// an error when required); a present field of the wrong type or out of range is an error naming
// the file, the field, the value and the bound. Thread safety: pure functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"

namespace moerun::config_fields {

using Json = nlohmann::json;

inline bool Has(const Json& j, const char* name) { return j.contains(name) && !j.at(name).is_null(); }

// An integer in [min, 2^31].
inline StatusOr<int64_t> Int(const Json& j, const std::string& src, const char* name, int64_t min,
                             bool required, int64_t fallback) {
  if (!Has(j, name)) {
    if (required) return InvalidArgument("{}: required field '{}' is missing", src, name);
    return fallback;
  }
  const Json& v = j.at(name);
  if (!v.is_number_integer())
    return InvalidArgument("{}: field '{}' must be an integer, got {}", src, name, v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < min) return InvalidArgument("{}: field '{}' = {} must be >= {}", src, name, x, min);
  if (x > (int64_t{1} << 31)) return InvalidArgument("{}: field '{}' = {} exceeds 2^31", src, name, x);
  return x;
}

inline StatusOr<double> Num(const Json& j, const std::string& src, const char* name, double fallback) {
  if (!Has(j, name)) return fallback;
  const Json& v = j.at(name);
  if (!v.is_number()) return InvalidArgument("{}: field '{}' must be a number, got {}", src, name, v.dump());
  const double x = v.get<double>();
  if (!std::isfinite(x)) return InvalidArgument("{}: field '{}' = {} must be finite", src, name, x);
  return x;
}

// A value read before (a field, or its fallback) that must be > 0, e.g. rms_norm_eps, rope_theta.
inline Status CheckPositive(const std::string& src, const char* name, double x) {
  if (!(x > 0) || !std::isfinite(x))
    return InvalidArgument("{}: field '{}' = {} must be > 0 (and finite)", src, name, x);
  return Status::Ok();
}

inline StatusOr<bool> Bool(const Json& j, const std::string& src, const char* name, bool fallback) {
  if (!Has(j, name)) return fallback;
  const Json& v = j.at(name);
  if (!v.is_boolean())
    return InvalidArgument("{}: field '{}' must be true or false, got {}", src, name, v.dump());
  return v.get<bool>();
}

}  // namespace moerun::config_fields
