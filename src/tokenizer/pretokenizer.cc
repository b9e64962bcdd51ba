#include "tokenizer/pretokenizer.h"

#include <algorithm>
#include <utility>

#include "tokenizer/json_fields.h"
#include "tokenizer/json_steps.h"
#include "tokenizer/utf8.h"

namespace moerun::tokenizer_internal {
namespace {

// The pattern HF's ByteLevel pre-tokenizer splits with when use_regex is true (from GPT-2).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

StatusOr<SplitBehavior> ParseBehavior(const Json& obj, const std::string& label) {
  ASSIGN_OR_RETURN(std::string name, GetString(obj, "behavior", label));
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return Corruption(
      "{}.behavior: unknown value '{}' (expected Removed, Isolated, MergedWithPrevious, "
      "MergedWithNext or Contiguous)",
      label, name);
}

struct Segment {
  size_t begin;
  size_t end;
  bool is_match;
};

}  // namespace

StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const Json& value, std::string_view label) {
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  if (!value.is_null()) RETURN_IF_ERROR(pre->AddElement(value, std::string(label)));
  for (size_t i = 0; i + 1 < pre->steps_.size(); ++i) {
    if (pre->steps_[i].byte_level) {
      return Unimplemented(
          "{}: ByteLevel is supported only as the last pre-tokenizer step (it is step {} of {})", label,
          i + 1, pre->steps_.size());
    }
  }
  if (pre->byte_level()) {
    for (size_t i = 0; i < pre->steps_.size(); ++i) {
      if (pre->steps_[i].metaspace) {
        return Unimplemented("{}: Metaspace (step {} of {}) together with ByteLevel is not supported", label,
                             i + 1, pre->steps_.size());
      }
    }
  }
  return pre;
}

Status PreTokenizer::AddElement(const Json& value, const std::string& label) {
  RETURN_IF_ERROR(ExpectObject(value, label));
  ASSIGN_OR_RETURN(std::string type, GetString(value, "type", label));
  if (type == "Sequence") {
    return ForEachSequenceElement(value, "pretokenizers", label,
                                  [&](const Json& element, const std::string& element_label) {
                                    return AddElement(element, element_label);
                                  });
  }
  Step step;
  if (type == "Split") {
    ASSIGN_OR_RETURN(step.regex, CompilePatternField(value, label));
    ASSIGN_OR_RETURN(step.behavior, ParseBehavior(value, label));
    ASSIGN_OR_RETURN(step.invert, GetBool(value, "invert", label, false));
  } else if (type == "Digits") {
    ASSIGN_OR_RETURN(const bool individual, GetBool(value, "individual_digits", label, false));
    // HF splits on char::is_numeric (categories Nd, Nl, No), i.e. \p{N}.
    ASSIGN_OR_RETURN(step.regex, Regex::Compile(R"(\p{N})", /*literal=*/false, label));
    step.behavior = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (type == "ByteLevel") {
    step.byte_level = true;
    ASSIGN_OR_RETURN(step.add_prefix_space, GetBool(value, "add_prefix_space", label, true));
    ASSIGN_OR_RETURN(const bool use_regex, GetBool(value, "use_regex", label, true));
    if (use_regex) {
      ASSIGN_OR_RETURN(step.regex, Regex::Compile(kGpt2Pattern, /*literal=*/false, label));
    }
  } else if (type == "Metaspace") {
    RETURN_IF_ERROR(AddMetaspace(value, label, &step));
  } else {
    return Unimplemented(
        "{}.type: pre-tokenizer '{}' is not supported (supported: Sequence, Split, Digits, ByteLevel, "
        "Metaspace)",
        label, type);
  }
  steps_.push_back(std::move(step));
  return Status::Ok();
}

Status PreTokenizer::AddMetaspace(const Json& value, const std::string& label, Step* step) {
  step->metaspace = true;
  ASSIGN_OR_RETURN(step->replacement, GetString(value, "replacement", label));
  char32_t cp;
  bool valid;
  if (step->replacement.empty() || Utf8Next(step->replacement, 0, &cp, &valid) != step->replacement.size() ||
      !valid) {
    return Corruption("{}.replacement: '{}' is not one character", label, step->replacement);
  }
  ASSIGN_OR_RETURN(std::optional<std::string> scheme, GetOptionalString(value, "prepend_scheme", label));
  const Json* add_prefix_space = FindField(value, "add_prefix_space");
  ASSIGN_OR_RETURN(const bool prefix, GetBool(value, "add_prefix_space", label, true));
  if (scheme.has_value()) {
    if (*scheme == "always") {
      step->prepend_scheme = PrependScheme::kAlways;
    } else if (*scheme == "first") {
      step->prepend_scheme = PrependScheme::kFirst;
    } else if (*scheme == "never") {
      step->prepend_scheme = PrependScheme::kNever;
    } else {
      return Corruption("{}.prepend_scheme: unknown value '{}' (expected always, first or never)", label,
                        *scheme);
    }
    // HF refuses add_prefix_space: false next to a scheme that prepends.
    if (add_prefix_space != nullptr && !add_prefix_space->is_null() && !prefix &&
        step->prepend_scheme != PrependScheme::kNever) {
      return Corruption("{}.add_prefix_space: false contradicts prepend_scheme '{}'", label, *scheme);
    }
  } else {
    step->prepend_scheme = prefix ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  ASSIGN_OR_RETURN(const bool split, GetBool(value, "split", label, true));
  if (split) {
    ASSIGN_OR_RETURN(step->regex,
                     Regex::Compile(step->replacement, /*literal=*/true, label + ".replacement"));
    step->behavior = SplitBehavior::kMergedWithNext;
  }
  return Status::Ok();
}

void PreTokenizer::Split(std::string_view text, std::vector<std::string>* pieces, bool at_text_start) const {
  if (text.empty()) return;
  std::vector<Piece> current{{std::string(text), at_text_start}};
  std::vector<Piece> next;
  for (const Step& step : steps_) {
    next.clear();
    for (Piece& piece : current) {
      std::string& t = piece.text;
      if (step.byte_level && step.add_prefix_space && t.front() != ' ') t.insert(t.begin(), ' ');
      if (step.metaspace) {
        for (size_t pos = t.find(' '); pos != std::string::npos;
             pos = t.find(' ', pos + step.replacement.size())) {
          t.replace(pos, 1, step.replacement);
        }
        const bool prepend = step.prepend_scheme == PrependScheme::kAlways ||
                             (step.prepend_scheme == PrependScheme::kFirst && piece.at_text_start);
        if (prepend && !t.starts_with(step.replacement)) t.insert(0, step.replacement);
      }
      if (step.regex == nullptr) {
        next.push_back(std::move(piece));
      } else {
        ApplySplit(step, piece, &next);
      }
    }
    std::swap(current, next);
  }
  for (Piece& piece : current) pieces->push_back(std::move(piece.text));
}

void PreTokenizer::ApplySplit(const Step& step, const Piece& whole, std::vector<Piece>* out) {
  const std::string_view piece = whole.text;
  std::vector<std::pair<size_t, size_t>> matches;
  // On a PCRE2 resource error the text after the last match found stays one unmatched segment.
  (void)step.regex->FindAll(piece, &matches);

  // The piece as alternating unmatched / matched segments, in order, none empty.
  std::vector<Segment> segments;
  size_t pos = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > pos) segments.push_back({pos, begin, false});
    segments.push_back({begin, end, true});
    pos = end;
  }
  if (pos < piece.size()) segments.push_back({pos, piece.size(), false});
  if (step.invert) {
    for (Segment& s : segments) s.is_match = !s.is_match;
  }

  std::vector<Segment> kept;
  bool previous_match = false;
  switch (step.behavior) {
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) kept.push_back(s);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) kept.push_back(s);
      break;
    case SplitBehavior::kMergedWithPrevious:
      // A match joins the piece before it, unless that piece is itself a match.
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // Mirror image: a match joins the piece after it, unless that piece is itself a match.
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    case SplitBehavior::kContiguous:
      // Adjacent matches form one piece.
      for (const Segment& s : segments) {
        if (s.is_match && previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
  }
  for (const Segment& s : kept) {
    out->push_back(
        {std::string(piece.substr(s.begin, s.end - s.begin)), whole.at_text_start && s.begin == 0});
  }
}

}  // namespace moerun::tokenizer_internal
