// Detokenizer: complete UTF-8 only, characters split across ids held back, ill-formed bytes as
// U+FFFD, and the streamed text equal to Tokenizer::Decode of all the ids.
#include "engine/detokenizer.h"

#include <gtest/gtest.h>

#include "tokenizer/utf8.h"

namespace moerun {
namespace {

constexpr const char* kFffd = "\xEF\xBF\xBD";

TEST(Detokenizer, HoldsBackACharacterSplitAcrossSteps) {
  Detokenizer d(nullptr);
  EXPECT_EQ(d.PushBytes("a\xE2"), "a");  // '€' = E2 82 AC
  EXPECT_EQ(d.pending_bytes(), 1u);
  EXPECT_EQ(d.PushBytes("\x82"), "");
  EXPECT_EQ(d.PushBytes("\xAC"
                        "b\xF0\x9F"),
            "\xE2\x82\xAC"
            "b");  // then half of U+1F600
  EXPECT_EQ(d.PushBytes("\x98"), "");
  EXPECT_EQ(d.PushBytes("\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.Flush(), "");
}

TEST(Detokenizer, IllFormedBytesBecomeReplacementCharacters) {
  Detokenizer d(nullptr);
  EXPECT_EQ(d.PushBytes("\x80x"), std::string(kFffd) + "x");                   // a lone continuation byte
  EXPECT_EQ(d.PushBytes("\xC0"), kFffd);                                       // never a lead byte
  EXPECT_EQ(d.PushBytes("\xE2\x82"), "");                                      // could still complete ...
  EXPECT_EQ(d.PushBytes("y"), std::string(kFffd) + "y");                       // ... but did not: one U+FFFD
  EXPECT_EQ(d.PushBytes("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);  // a surrogate
  EXPECT_EQ(d.PushBytes("\xF0\x9F\x98"), "");
  EXPECT_EQ(d.Flush(), kFffd);  // cut off at the end
  EXPECT_EQ(d.pending_bytes(), 0u);
}

TEST(Detokenizer, StreamEqualsDecodeOfAllIds) {
  auto tok = Tokenizer::FromDirectory(MOERUN_TEST_MODEL_DIR).value();
  // Byte tokens of "é€😀" one byte per id, an invalid byte, then ordinary text.
  std::vector<int32_t> ids;
  for (unsigned char b : std::string("h\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xFF ok\xE2\x82")) {
    auto id = tok->PieceToId(tokenizer_internal::ByteToUnicode(b));
    ASSERT_TRUE(id.has_value()) << "byte " << int{b};
    ids.push_back(*id);
  }
  const std::vector<int32_t> more = tok->Encode(" 12+7=19", false);
  ids.insert(ids.begin() + 3, more.begin(), more.end());  // splits 'é'
  if (tok->eos_id()) ids.push_back(*tok->eos_id());       // special: no text
  Detokenizer d(tok.get());
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = d.Push(id);
    EXPECT_TRUE(tokenizer_internal::IsValidUtf8(piece));
    streamed += piece;
  }
  streamed += d.Flush();
  EXPECT_EQ(streamed, tok->Decode(ids, /*skip_special_tokens=*/true).value());
  EXPECT_EQ(d.textless(), 0);
  EXPECT_EQ(d.Push(tok->vocab_size() + 5), "");  // no text: counted, skipped
  EXPECT_EQ(d.textless(), 1);
}

}  // namespace
}  // namespace moerun
