// Structural checks of untrusted JSON text, run before nlohmann::json builds a DOM of it.
//
// nlohmann::json silently keeps the last of duplicate object keys and will happily build a DOM of
// any depth and width. CheckJsonStructure runs one SAX pass (no DOM) that rejects, in document
// order: syntax errors, duplicate keys in any object, nesting deeper than `max_depth` (objects and
// arrays both count; the root value is depth 1), and arrays longer than `max_array_elements`.
// So the DOM built afterwards is bounded and a lookup by key sees the only value of that key.
//
// Internal to src/io (header-only because nlohmann is a private dependency of moerun_io).
// Thread safety: pure function.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "core/status.h"

namespace moerun::internal {

struct JsonLimits {
  size_t max_depth = 16;
  size_t max_array_elements = static_cast<size_t>(-1);
};

// SAX handler for CheckJsonStructure; records the first violation and stops the parse.
class JsonStructureChecker final : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit JsonStructureChecker(JsonLimits limits) : limits_(limits) {}

  bool null() override { return Value(); }
  bool boolean(bool /*val*/) override { return Value(); }
  bool number_integer(number_integer_t /*val*/) override { return Value(); }
  bool number_unsigned(number_unsigned_t /*val*/) override { return Value(); }
  bool number_float(number_float_t /*val*/, const string_t& /*s*/) override { return Value(); }
  bool string(string_t& /*val*/) override { return Value(); }
  bool binary(binary_t& /*val*/) override { return Value(); }

  bool start_object(std::size_t /*elements*/) override { return Open(/*is_array=*/false); }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t /*elements*/) override { return Open(/*is_array=*/true); }
  bool end_array() override { return Close(); }

  bool key(string_t& val) override {
    Frame& frame = frames_.back();
    if (!frame.keys.insert(val).second) {
      if (frames_.size() == 1) return Fail(fmt::format("duplicate key '{}'", val));
      return Fail(fmt::format("duplicate key '{}'{}", val, Where()));
    }
    if (frames_.size() == 1) top_key_ = val;
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) override {
    return Fail(fmt::format("invalid JSON: {}", ex.what()));
  }

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  struct Frame {
    bool is_array = false;
    size_t elements = 0;                   // arrays only
    std::unordered_set<std::string> keys;  // objects only
  };

  // " inside '<top key>'", or "" before the first key of the root object.
  std::string Where() const {
    return top_key_.empty() ? std::string() : fmt::format(" inside '{}'", top_key_);
  }
  // Counts a value (scalar or container) against the enclosing array's length cap.
  bool Value() {
    if (frames_.empty() || !frames_.back().is_array) return true;
    if (++frames_.back().elements > limits_.max_array_elements) {
      return Fail(fmt::format("an array{} has more than {} elements", Where(), limits_.max_array_elements));
    }
    return true;
  }
  bool Open(bool is_array) {
    if (!Value()) return false;
    if (frames_.size() + 1 > limits_.max_depth) {
      return Fail(fmt::format("JSON nested deeper than {} levels{}", limits_.max_depth, Where()));
    }
    frames_.push_back(Frame{is_array, 0, {}});
    return true;
  }
  bool Close() {
    if (!frames_.empty()) frames_.pop_back();
    return true;
  }
  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  JsonLimits limits_;
  std::vector<Frame> frames_;
  std::string top_key_;  // the most recent key of the root object, for messages
  std::string error_;
};

// OK, or Corruption "<label>: <violation>".
inline Status CheckJsonStructure(std::string_view text, JsonLimits limits, std::string_view label) {
  JsonStructureChecker checker(limits);
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &checker);
  if (ok && !checker.failed()) return Status::Ok();
  if (!checker.failed()) return Corruption("{}: invalid JSON", label);
  return Corruption("{}: {}", label, checker.error());
}

}  // namespace moerun::internal
