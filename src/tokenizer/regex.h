// Regex: a compiled PCRE2 pattern used by the pre-tokenizer (internal to src/tokenizer).
//
// Patterns come from tokenizer.json (HF `Split` pre-tokenizers), so they are written for the
// Oniguruma/Rust dialects; PCRE2 accepts the constructs those files use (\p{..}, lookahead,
// (?i:..), possessive classes). Compiled with PCRE2_UTF | PCRE2_UCP so \s, \w, \d and \p{..} are
// Unicode-aware, JIT-compiled when PCRE2 has a JIT for this CPU (else the interpreter is used).
//
// FindAll contract: the subject must be valid UTF-8 (checked by the caller; matching runs with
// PCRE2_NO_UTF_CHECK). Matches are non-overlapping, leftmost-first, found by resuming after each
// match; an empty match is dropped and the search resumes one character later (the semantics of
// JavaScript's String.prototype.matchAll with the `u` flag). `$` keeps PCRE2's default meaning
// (end of subject or before a final newline).
//
// Thread safety: a Regex is immutable after Compile; FindAll is const and may run concurrently
// (per-thread match data and JIT stack live in thread_local storage).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace moerun::tokenizer_internal {

class Regex {
 public:
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Compiles `pattern` (`literal`: match it as a plain string). Errors are InvalidArgument naming
  // `label` (e.g. "pre_tokenizer.pretokenizers[1].pattern.Regex"), the PCRE2 message and offset.
  static StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, bool literal,
                                                  std::string_view label);

  // Appends the [begin, end) byte ranges of all non-empty matches in `subject`. Returns false if
  // PCRE2 reported a resource error (match/depth/heap limit) even after retrying without the JIT;
  // `out` then holds the matches found before the failure.
  bool FindAll(std::string_view subject, std::vector<std::pair<size_t, size_t>>* out) const;

  const std::string& pattern() const { return pattern_; }
  bool jit() const { return jit_; }

 private:
  Regex() = default;

  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so this header does not pull in pcre2.h
  bool jit_ = false;
  std::string pattern_;
};

}  // namespace moerun::tokenizer_internal
