// Typed, non-throwing field access for tokenizer.json / tokenizer_config.json (internal to
// src/tokenizer). Every error is Corruption naming "<label>.<key>" and what was expected.
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace moerun::tokenizer_internal {

using Json = nlohmann::json;

inline std::string FieldLabel(std::string_view label, std::string_view key) {
  if (label.empty()) return std::string(key);
  return fmt::format("{}.{}", label, key);
}

// The member `key` of object `obj`, or null if absent.
inline const Json* FindField(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

inline Status ExpectObject(const Json& value, std::string_view label) {
  if (value.is_object()) return Status::Ok();
  return Corruption("{}: expected an object, got {}", label, value.type_name());
}

// A bool member; absent or null gives `fallback`.
inline StatusOr<bool> GetBool(const Json& obj, std::string_view key, std::string_view label, bool fallback) {
  const Json* v = FindField(obj, key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_boolean()) {
    return Corruption("{}: expected true or false, got {}", FieldLabel(label, key), v->type_name());
  }
  return v->get<bool>();
}

// A string member; absent or null gives std::nullopt.
inline StatusOr<std::optional<std::string>> GetOptionalString(const Json& obj, std::string_view key,
                                                              std::string_view label) {
  const Json* v = FindField(obj, key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) {
    return Corruption("{}: expected a string, got {}", FieldLabel(label, key), v->type_name());
  }
  return std::optional<std::string>(v->get<std::string>());
}

// A required string member.
inline StatusOr<std::string> GetString(const Json& obj, std::string_view key, std::string_view label) {
  ASSIGN_OR_RETURN(std::optional<std::string> s, GetOptionalString(obj, key, label));
  if (!s.has_value()) return Corruption("{}: missing (expected a string)", FieldLabel(label, key));
  return std::move(*s);
}

}  // namespace moerun::tokenizer_internal
