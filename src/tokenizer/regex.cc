#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/utf8.h"

namespace moerun::tokenizer_internal {
namespace {

constexpr size_t kJitStackStart = 32 * 1024;
constexpr size_t kJitStackMax = 8 * 1024 * 1024;

std::string Pcre2ErrorMessage(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  if (n < 0) return fmt::format("PCRE2 error {}", code);
  return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// Per-thread scratch for pcre2_match: only the whole-match offsets are read, so one ovector pair
// serves every pattern. The JIT stack may grow to kJitStackMax for long whitespace runs.
class MatchScratch {
 public:
  MatchScratch()
      : data_(pcre2_match_data_create(1, nullptr)),
        context_(pcre2_match_context_create(nullptr)),
        jit_stack_(pcre2_jit_stack_create(kJitStackStart, kJitStackMax, nullptr)) {
    if (context_ != nullptr && jit_stack_ != nullptr) {
      pcre2_jit_stack_assign(context_, nullptr, jit_stack_);
    }
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack_);
    pcre2_match_context_free(context_);
    pcre2_match_data_free(data_);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;

  pcre2_match_data* data() const { return data_; }
  pcre2_match_context* context() const { return context_; }

 private:
  pcre2_match_data* data_;
  pcre2_match_context* context_;
  pcre2_jit_stack* jit_stack_;
};

MatchScratch& ThreadScratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, bool literal,
                                                std::string_view label) {
  if (!IsValidUtf8(pattern)) return InvalidArgument("{}: the pattern is not valid UTF-8", label);
  // PCRE2_UCP only changes the meaning of escapes and classes, and is not allowed with LITERAL.
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                                   &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    return InvalidArgument("{}: cannot compile /{}/ at byte {}: {}", label, pattern, error_offset,
                           Pcre2ErrorMessage(error_code));
  }
  std::unique_ptr<Regex> regex(new Regex());
  regex->code_ = code;
  regex->pattern_ = std::string(pattern);
  // Falls back to the interpreter when PCRE2 was built without a JIT for this CPU.
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

bool Regex::FindAll(std::string_view subject, std::vector<std::pair<size_t, size_t>>* out) const {
  MatchScratch& scratch = ThreadScratch();
  if (scratch.data() == nullptr) return false;
  const auto* code = static_cast<const pcre2_code*>(code_);
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  while (start < subject.size()) {
    int rc =
        pcre2_match(code, text, subject.size(), start, PCRE2_NO_UTF_CHECK, scratch.data(), scratch.context());
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && jit_) {
      // JIT stack exhausted: the interpreter has its own (heap) limits.
      rc = pcre2_match(code, text, subject.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, scratch.data(),
                       scratch.context());
    }
    if (rc == PCRE2_ERROR_NOMATCH) return true;
    if (rc < 0) return false;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data());
    const size_t begin = ovector[0], end = ovector[1];
    if (begin < start || end < begin || end > subject.size()) return false;  // \K tricks
    if (end > begin) {
      out->emplace_back(begin, end);
      start = end;
    } else {
      if (begin >= subject.size()) return true;
      char32_t cp;
      bool valid;
      start = begin + Utf8Next(subject, begin, &cp, &valid);
    }
  }
  return true;
}

}  // namespace moerun::tokenizer_internal
