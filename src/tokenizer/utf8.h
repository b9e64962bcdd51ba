// UTF-8 and byte-level helpers for the tokenizer (internal to src/tokenizer).
//
// - Utf8Next / IsValidUtf8 / SanitizeUtf8: well-formedness per Unicode Table 3-7 (no overlongs, no
//   surrogates, nothing above U+10FFFF). SanitizeUtf8 replaces each *maximal subpart* of an
//   ill-formed sequence with U+FFFD, the W3C/WHATWG "replacement" policy that JavaScript's
//   TextDecoder, Python's bytes.decode(errors="replace") and Rust's String::from_utf8_lossy share.
// - ByteToUnicode / UnicodeToByte: the GPT-2 `bytes_to_unicode` table used by ByteLevel
//   pre-tokenizers and decoders: printable Latin-1 bytes map to themselves, the other 68 bytes to
//   U+0100.. in byte order, so every byte has a visible, non-space character.
// - IsUnicodeWhitespace: the Unicode White_Space property (25 code points), for added-token
//   lstrip/rstrip.
//
// Thread safety: pure functions; the tables are built once, thread-safely, on first use.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace moerun::tokenizer_internal {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Decodes the sequence starting at s[pos] (pos < s.size()). Returns the number of bytes it
// spans: a well-formed character (1..4 bytes, *cp set, *valid true), or the maximal ill-formed
// subpart (>= 1 bytes, *valid false, *cp set to U+FFFD).
size_t Utf8Next(std::string_view s, size_t pos, char32_t* cp, bool* valid);

bool IsValidUtf8(std::string_view s);

// `s` with every maximal ill-formed subpart replaced by U+FFFD (a copy of `s` if it is valid).
std::string SanitizeUtf8(std::string_view s);

// Appends the UTF-8 encoding of `cp` (must be a Unicode scalar value).
void AppendUtf8(char32_t cp, std::string* out);

// The UTF-8 text of the character byte `b` maps to.
const std::string& ByteToUnicode(unsigned char b);
// The byte a code point stands for, or -1 if `cp` is not in the byte-level alphabet.
int UnicodeToByte(char32_t cp);

bool IsUnicodeWhitespace(char32_t cp);

// `s` without leading (TrimStart) or trailing (TrimEnd) White_Space; `s` must be valid UTF-8.
std::string_view TrimStartWhitespace(std::string_view s);
std::string_view TrimEndWhitespace(std::string_view s);

}  // namespace moerun::tokenizer_internal
