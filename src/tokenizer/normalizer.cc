#include "tokenizer/normalizer.h"

#include <utility>

#include "tokenizer/json_fields.h"

namespace moerun::tokenizer_internal {

StatusOr<std::unique_ptr<Normalizer>> Normalizer::FromJson(const Json& value, std::string_view label) {
  std::unique_ptr<Normalizer> normalizer(new Normalizer());
  if (!value.is_null()) RETURN_IF_ERROR(normalizer->AddElement(value, std::string(label)));
  return normalizer;
}

Status Normalizer::AddElement(const Json& value, const std::string& label) {
  RETURN_IF_ERROR(ExpectObject(value, label));
  ASSIGN_OR_RETURN(std::string type, GetString(value, "type", label));
  if (type == "Sequence") {
    const Json* list = FindField(value, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return Corruption("{}.normalizers: expected an array, got {}", label,
                        list == nullptr ? "nothing" : list->type_name());
    }
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(AddElement((*list)[i], fmt::format("{}.normalizers[{}]", label, i)));
    }
    return Status::Ok();
  }
  Step step;
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(step.prepend, GetString(value, "prepend", label));
    if (step.prepend.empty()) return Status::Ok();  // prepends nothing
  } else if (type == "Replace") {
    const Json* pattern = FindField(value, "pattern");
    const std::string pattern_label = label + ".pattern";
    if (pattern == nullptr)
      return Corruption("{}: missing (expected {{\"String\": ..}} or {{\"Regex\": ..}})", pattern_label);
    RETURN_IF_ERROR(ExpectObject(*pattern, pattern_label));
    ASSIGN_OR_RETURN(std::optional<std::string> regex, GetOptionalString(*pattern, "Regex", pattern_label));
    ASSIGN_OR_RETURN(std::optional<std::string> literal,
                     GetOptionalString(*pattern, "String", pattern_label));
    if (regex.has_value() == literal.has_value()) {
      return Corruption("{}: expected exactly one of \"Regex\" and \"String\"", pattern_label);
    }
    const bool is_literal = literal.has_value();
    const std::string& text = is_literal ? *literal : *regex;
    const std::string text_label = fmt::format("{}.{}", pattern_label, is_literal ? "String" : "Regex");
    if (text.empty()) return Corruption("{}: the pattern is empty", text_label);
    ASSIGN_OR_RETURN(step.regex, Regex::Compile(text, is_literal, text_label));
    ASSIGN_OR_RETURN(step.content, GetString(value, "content", label));
  } else {
    return Unimplemented("{}.type: normalizer '{}' is not supported (supported: Sequence, Prepend, Replace)",
                         label, type);
  }
  steps_.push_back(std::move(step));
  return Status::Ok();
}

std::string Normalizer::Normalize(std::string_view text) const {
  std::string current(text);
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Step& step : steps_) {
    if (current.empty()) break;  // Prepend leaves empty text alone; Replace has nothing to match
    if (step.regex == nullptr) {
      current.insert(0, step.prepend);
      continue;
    }
    matches.clear();
    // On a PCRE2 resource error the text after the last match found is kept as it is.
    (void)step.regex->FindAll(current, &matches);
    if (matches.empty()) continue;
    std::string next;
    next.reserve(current.size());
    size_t pos = 0;
    for (const auto& [begin, end] : matches) {
      next.append(current, pos, begin - pos).append(step.content);
      pos = end;
    }
    next.append(current, pos, std::string::npos);
    current = std::move(next);
  }
  return current;
}

}  // namespace moerun::tokenizer_internal
