#include "tokenizer/decoder.h"

#include <utility>

#include "tokenizer/json_fields.h"
#include "tokenizer/json_steps.h"
#include "tokenizer/utf8.h"

namespace moerun::tokenizer_internal {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A non-negative integer member that must be present.
StatusOr<size_t> GetCount(const Json& obj, std::string_view key, const std::string& label) {
  const Json* v = FindField(obj, key);
  if (v == nullptr || !v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 1 << 20) {
    return Corruption("{}: expected an integer in [0, {}]", FieldLabel(label, key), 1 << 20);
  }
  return static_cast<size_t>(v->get<int64_t>());
}

// A member that must be exactly one UTF-8 character.
StatusOr<std::string> GetChar(const Json& obj, std::string_view key, const std::string& label) {
  ASSIGN_OR_RETURN(std::string s, GetString(obj, key, label));
  char32_t cp;
  bool valid;
  if (s.empty() || Utf8Next(s, 0, &cp, &valid) != s.size() || !valid) {
    return Corruption("{}: '{}' is not one character", FieldLabel(label, key), s);
  }
  return s;
}

void ReplaceAll(std::string* text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  for (size_t pos = text->find(from); pos != std::string::npos; pos = text->find(from, pos + to.size())) {
    text->replace(pos, from.size(), to);
  }
}

}  // namespace

StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const Json& value, std::string_view label) {
  std::unique_ptr<Decoder> decoder(new Decoder());
  if (value.is_null()) {
    return Unimplemented("{}: null is not supported (supported: ByteLevel, Metaspace, Sequence)", label);
  }
  RETURN_IF_ERROR(decoder->AddElement(value, std::string(label), /*top_level=*/true));
  return decoder;
}

Status Decoder::AddElement(const Json& value, const std::string& label, bool top_level) {
  RETURN_IF_ERROR(ExpectObject(value, label));
  ASSIGN_OR_RETURN(std::string type, GetString(value, "type", label));
  if (type == "ByteLevel") {
    if (!top_level) {
      return Unimplemented("{}.type: ByteLevel is supported only as the whole decoder, not in a Sequence",
                           label);
    }
    byte_level_ = true;
    return Status::Ok();
  }
  if (type == "Sequence" && top_level) {
    return ForEachSequenceElement(value, "decoders", label,
                                  [&](const Json& element, const std::string& element_label) {
                                    return AddElement(element, element_label, false);
                                  });
  }
  if (type == "Fuse") {
    fused_ = true;
    return Status::Ok();
  }
  Step step;
  if (type == "Replace") {
    const Json* pattern = FindField(value, "pattern");
    const std::string pattern_label = label + ".pattern";
    if (pattern == nullptr) return Corruption("{}: missing (expected {{\"String\": ..}})", pattern_label);
    RETURN_IF_ERROR(ExpectObject(*pattern, pattern_label));
    if (FindField(*pattern, "Regex") != nullptr) {
      return Unimplemented("{}.Regex: a Replace decoder with a regex is not supported (only String)",
                           pattern_label);
    }
    step.kind = Kind::kReplace;
    ASSIGN_OR_RETURN(step.from, GetString(*pattern, "String", pattern_label));
    if (step.from.empty()) return Corruption("{}.String: the pattern is empty", pattern_label);
    ASSIGN_OR_RETURN(step.to, GetString(value, "content", label));
  } else if (type == "ByteFallback") {
    step.kind = Kind::kByteFallback;
  } else if (type == "Strip") {
    step.kind = Kind::kStrip;
    ASSIGN_OR_RETURN(step.from, GetChar(value, "content", label));
    ASSIGN_OR_RETURN(step.start, GetCount(value, "start", label));
    ASSIGN_OR_RETURN(step.stop, GetCount(value, "stop", label));
    if (fused_) {
      sequence_steps_.push_back(std::move(step));
      return Status::Ok();
    }
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    ASSIGN_OR_RETURN(step.from, GetChar(value, "replacement", label));
    // As the pre-tokenizer: prepend_scheme, else add_prefix_space (default true, "always").
    ASSIGN_OR_RETURN(std::optional<std::string> scheme, GetOptionalString(value, "prepend_scheme", label));
    ASSIGN_OR_RETURN(const bool prefix, GetBool(value, "add_prefix_space", label, true));
    if (scheme.has_value() && *scheme != "always" && *scheme != "first" && *scheme != "never") {
      return Corruption("{}.prepend_scheme: unknown value '{}' (expected always, first or never)", label,
                        *scheme);
    }
    step.strip_first = scheme.has_value() ? *scheme != "never" : prefix;
    first_token_differs_ = first_token_differs_ || step.strip_first;
  } else {
    return Unimplemented(
        "{}.type: decoder '{}' is not supported (supported: ByteLevel alone, or Replace, ByteFallback, Fuse, "
        "Strip, Metaspace)",
        label, type);
  }
  if (fused_) {
    return Unimplemented("{}.type: {} after Fuse is not supported (only Strip may follow Fuse)", label, type);
  }
  token_steps_.push_back(std::move(step));
  return Status::Ok();
}

void Decoder::Strip(const Step& step, std::string* text) {
  const std::string_view c = step.from;
  size_t begin = 0;
  for (size_t i = 0; i < step.start && std::string_view(*text).substr(begin).starts_with(c); ++i) {
    begin += c.size();
  }
  size_t end = text->size();
  for (size_t i = 0;
       i < step.stop && end >= begin + c.size() && std::string_view(*text).substr(0, end).ends_with(c); ++i) {
    end -= c.size();
  }
  *text = text->substr(begin, end - begin);
}

std::string Decoder::TokenBytes(std::string_view piece, bool first) const {
  std::string out;
  if (byte_level_) {
    // Byte-level text back to bytes; a token with a character outside that alphabet is kept as
    // its UTF-8 text.
    size_t pos = 0;
    while (pos < piece.size()) {
      char32_t cp;
      bool valid;
      const size_t n = Utf8Next(piece, pos, &cp, &valid);
      const int b = valid ? UnicodeToByte(cp) : -1;
      if (b < 0) return std::string(piece);
      out.push_back(static_cast<char>(b));
      pos += n;
    }
    return out;
  }
  out = piece;
  for (const Step& step : token_steps_) {
    switch (step.kind) {
      case Kind::kReplace:
        ReplaceAll(&out, step.from, step.to);
        break;
      case Kind::kByteFallback:
        if (out.size() == 6 && out.starts_with("<0x") && out.back() == '>' && HexDigit(out[3]) >= 0 &&
            HexDigit(out[4]) >= 0) {
          out = std::string(1, static_cast<char>(HexDigit(out[3]) * 16 + HexDigit(out[4])));
        }
        break;
      case Kind::kStrip:
        Strip(step, &out);
        break;
      case Kind::kMetaspace:
        ReplaceAll(&out, step.from, first && step.strip_first ? "" : " ");
        break;
    }
  }
  return out;
}

void Decoder::FinishSequence(std::string* bytes) const {
  for (const Step& step : sequence_steps_) Strip(step, bytes);
}

}  // namespace moerun::tokenizer_internal
