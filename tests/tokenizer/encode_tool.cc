// Test driver for npm_compare.sh and sp_npm_compare.sh: encodes a file with moerun's Tokenizer.
//
// usage: tokenizer_encode_tool <model_dir> <input> [--decode]
// Loads <model_dir>/tokenizer.json (+ tokenizer_config.json) and prints one line of
// comma-separated ids (no special tokens added) per '\n'-separated line of <input>, then one line
// for the whole file -- the format of encode_reference.mjs. With --decode each line also has a tab
// and the hex of the UTF-8 bytes of Decode(ids, skip_special_tokens=false), for comparison with
// the reference's decoder.
// For a byte-level tokenizer it also checks that decoding each line's ids gives the line back
// (with ill-formed UTF-8 replaced by U+FFFD) and exits 1 if not. SentencePiece-style files do not
// round-trip in general (a "▁" typed in the text decodes as a space, the text after an added token
// gains a "▁", Metaspace drops a leading space), so there the --decode comparison is the check.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "io/atomic_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

std::string Join(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  return out;
}

}  // namespace

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

int main(int argc, char** argv) {
  const bool decode = argc == 4 && std::string_view(argv[3]) == "--decode";
  if (argc != 3 && !decode) {
    std::fprintf(stderr, "usage: %s <model_dir> <input> [--decode]\n", argv[0]);
    return 2;
  }
  moerun::StatusOr<std::unique_ptr<moerun::Tokenizer>> tok = moerun::Tokenizer::FromDirectory(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 2;
  }
  moerun::StatusOr<std::string> input = moerun::ReadFileToString(argv[2]);
  if (!input.ok()) {
    std::fprintf(stderr, "%s\n", input.status().ToString().c_str());
    return 2;
  }
  const std::string_view text = *input;
  std::vector<std::string_view> lines;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') {
      lines.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (start < text.size()) lines.push_back(text.substr(start));
  lines.push_back(text);  // the whole file, last

  int failures = 0;
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::vector<int32_t> ids = (*tok)->Encode(lines[n], /*add_special_tokens=*/false);
    moerun::StatusOr<std::string> back = (*tok)->Decode(ids, /*skip_special_tokens=*/false);
    if (decode) {
      std::printf("%s\t%s\n", Join(ids).c_str(), back.ok() ? Hex(*back).c_str() : "decode-error");
    } else {
      std::printf("%s\n", Join(ids).c_str());
    }
    if (!back.ok() || ((*tok)->byte_level() && *back != moerun::tokenizer_internal::SanitizeUtf8(lines[n]))) {
      std::fprintf(stderr, "round trip failed on input line %zu%s\n", n + 1,
                   back.ok() ? "" : (": " + back.status().ToString()).c_str());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}
