// What tokenizer.json's normalizer, pre_tokenizer and decoder lists share (internal to
// src/tokenizer): a {"type": "Sequence", <list>: [...]} element visited in order, and a
// {"pattern": {"String": s} | {"Regex": r}} member compiled. Errors are Corruption naming the
// element's label. Thread safety: pure functions.
#pragma once

#include <fmt/format.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tokenizer/json_fields.h"
#include "tokenizer/regex.h"

namespace moerun::tokenizer_internal {

// add(element, "<label>.<list_key>[i]") for each element of value[list_key].
inline Status ForEachSequenceElement(const Json& value, const char* list_key, const std::string& label,
                                     const std::function<Status(const Json&, const std::string&)>& add) {
  const Json* list = FindField(value, list_key);
  if (list == nullptr || !list->is_array()) {
    return Corruption("{}.{}: expected an array, got {}", label, list_key,
                      list == nullptr ? "nothing" : list->type_name());
  }
  for (size_t i = 0; i < list->size(); ++i) {
    RETURN_IF_ERROR(add((*list)[i], fmt::format("{}.{}[{}]", label, list_key, i)));
  }
  return Status::Ok();
}

// value["pattern"]: exactly one of "String" (matched literally) and "Regex", non-empty, compiled.
inline StatusOr<std::unique_ptr<Regex>> CompilePatternField(const Json& value, const std::string& label) {
  const Json* pattern = FindField(value, "pattern");
  const std::string pattern_label = label + ".pattern";
  if (pattern == nullptr) {
    return Corruption("{}: missing (expected {{\"String\": ..}} or {{\"Regex\": ..}})", pattern_label);
  }
  RETURN_IF_ERROR(ExpectObject(*pattern, pattern_label));
  ASSIGN_OR_RETURN(std::optional<std::string> regex, GetOptionalString(*pattern, "Regex", pattern_label));
  ASSIGN_OR_RETURN(std::optional<std::string> literal, GetOptionalString(*pattern, "String", pattern_label));
  if (regex.has_value() == literal.has_value()) {
    return Corruption("{}: expected exactly one of \"Regex\" and \"String\"", pattern_label);
  }
  const bool is_literal = literal.has_value();
  const std::string& text = is_literal ? *literal : *regex;
  const std::string text_label = fmt::format("{}.{}", pattern_label, is_literal ? "String" : "Regex");
  if (text.empty()) return Corruption("{}: the pattern is empty", text_label);
  return Regex::Compile(text, is_literal, text_label);
}

}  // namespace moerun::tokenizer_internal
