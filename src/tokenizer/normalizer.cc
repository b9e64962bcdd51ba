#include "tokenizer/normalizer.h"

#include <utility>

#include "tokenizer/json_fields.h"
#include "tokenizer/json_steps.h"

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
    return ForEachSequenceElement(value, "normalizers", label,
                                  [&](const Json& element, const std::string& element_label) {
                                    return AddElement(element, element_label);
                                  });
  }
  Step step;
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(step.prepend, GetString(value, "prepend", label));
    if (step.prepend.empty()) return Status::Ok();  // prepends nothing
  } else if (type == "Replace") {
    ASSIGN_OR_RETURN(step.regex, CompilePatternField(value, label));
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
