#include "tokenizer/utf8.h"

#include <array>
#include <cstdint>

namespace moerun::tokenizer_internal {
namespace {

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_text;
  std::array<char32_t, 256> byte_to_cp{};
  std::array<int16_t, 0x100 + 68> cp_to_byte{};  // every mapped code point is below U+0144
};

bool IsPrintableLatin1(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

const ByteLevelTables& Tables() {
  static const ByteLevelTables tables = [] {
    ByteLevelTables t;
    char32_t next = 0x100;
    t.cp_to_byte.fill(-1);
    for (int b = 0; b < 256; ++b) {
      t.byte_to_cp[b] = IsPrintableLatin1(b) ? static_cast<char32_t>(b) : next++;
      AppendUtf8(t.byte_to_cp[b], &t.byte_to_text[b]);
      t.cp_to_byte[t.byte_to_cp[b]] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

}  // namespace

size_t Utf8Next(std::string_view s, size_t pos, char32_t* cp, bool* valid) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(pos);
  *valid = false;
  *cp = 0xFFFD;
  if (b0 < 0x80) {
    *valid = true;
    *cp = b0;
    return 1;
  }
  // Length and the allowed range of the second byte (Unicode Table 3-7); later bytes are 80..BF.
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  char32_t value = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 1;  // C0, C1, F5..FF or a stray continuation byte
  }
  for (size_t k = 1; k < len; ++k) {
    if (pos + k >= s.size()) return k;  // truncated: the lead and the continuations so far
    const unsigned char b = byte(pos + k);
    if (b < lo || b > hi) return k;
    value = (value << 6) | (b & 0x3F);
    lo = 0x80;
    hi = 0xBF;
  }
  *valid = true;
  *cp = value;
  return len;
}

bool IsValidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    char32_t cp;
    bool valid;
    pos += Utf8Next(s, pos, &cp, &valid);
    if (!valid) return false;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t pos = 0;
  while (pos < s.size()) {
    char32_t cp;
    bool valid;
    const size_t n = Utf8Next(s, pos, &cp, &valid);
    if (valid) {
      out.append(s.substr(pos, n));
    } else {
      out.append(kReplacementChar);
    }
    pos += n;
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const std::string& ByteToUnicode(unsigned char b) { return Tables().byte_to_text[b]; }

int UnicodeToByte(char32_t cp) {
  const ByteLevelTables& t = Tables();
  return cp < t.cp_to_byte.size() ? t.cp_to_byte[cp] : -1;
}

bool IsUnicodeWhitespace(char32_t cp) {
  if (cp >= 0x09 && cp <= 0x0D) return true;
  if (cp >= 0x2000 && cp <= 0x200A) return true;
  switch (cp) {
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return false;
  }
}

std::string_view TrimStartWhitespace(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    char32_t cp;
    bool valid;
    const size_t n = Utf8Next(s, pos, &cp, &valid);
    if (!valid || !IsUnicodeWhitespace(cp)) break;
    pos += n;
  }
  return s.substr(pos);
}

std::string_view TrimEndWhitespace(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;  // back up to the lead byte of the last character
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4) --start;
    char32_t cp;
    bool valid;
    const size_t n = Utf8Next(s, start, &cp, &valid);
    if (!valid || start + n != end || !IsUnicodeWhitespace(cp)) break;
    end = start;
  }
  return s.substr(0, end);
}

}  // namespace moerun::tokenizer_internal
