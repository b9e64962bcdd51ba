// SentencePiece-style BPE (Llama-2 / Mistral / Mixtral tokenizer.json) on a small hand-built file:
// ids 0..2 are <unk> <s> </s>, 3..258 the byte tokens <0x00>..<0xFF>, then single characters and
// the merged tokens below. The real Llama-2 file is compared against transformers.js by
// sp_npm_compare.sh.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace moerun {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

constexpr int32_t kUnk = 0, kBos = 1, kEos = 2;
constexpr int32_t Byte(int b) { return 3 + b; }
// The vocabulary's ids (an enum: the table is complete though not every id is used by a test).
enum : int32_t {
  // Single characters.
  kSpace = 259,
  kT = 260,
  kH = 261,
  kE = 262,
  kL = 263,
  kO = 264,
  kW = 265,
  kR = 266,
  kD = 267,
  kCapH = 268,
  kNi = 269,
  // Merged tokens, in merge-rank order.
  kSpT = 270,
  kHe = 271,
  kSpThe = 272,
  kLl = 273,
  kEll = 274,
  kHell = 275,
  kHello = 276,
  kSpW = 277,
  kOr = 278,
  kSpWor = 279,
  kLd = 280,
  kSpWorld = 281,
  kSpSp = 282,
  kSpHello = 283,
};

const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"▁", "t"}, {"h", "e"}, {"▁t", "he"}, {"l", "l"}, {"e", "ll"},    {"H", "ell"}, {"Hell", "o"},
    {"▁", "w"}, {"o", "r"}, {"▁w", "or"}, {"l", "d"}, {"▁wor", "ld"}, {"▁", "▁"},   {"▁", "Hello"}};

// Mixtral's layout: normalizer [Prepend "▁", Replace " " -> "▁"], no pre-tokenizer, decoder
// [Replace "▁" -> " ", ByteFallback, Fuse, Strip " " 1 0], TemplateProcessing adding <s>.
json MixtralStyleJson() {
  json vocab = json::object();
  vocab["<unk>"] = kUnk;
  vocab["<s>"] = kBos;
  vocab["</s>"] = kEos;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = Byte(b);
  }
  const std::vector<std::string> chars = {"▁", "t", "h", "e", "l", "o", "w", "r", "d", "H", "你"};
  for (size_t i = 0; i < chars.size(); ++i) vocab[chars[i]] = kSpace + static_cast<int32_t>(i);
  json merges = json::array();
  for (size_t i = 0; i < kMerges.size(); ++i) {
    vocab[kMerges[i].first + kMerges[i].second] = kSpT + static_cast<int32_t>(i);
    merges.push_back(kMerges[i].first + " " + kMerges[i].second);
  }
  const auto added = [](int id, const std::string& content) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({added(kUnk, "<unk>"), added(kBos, "<s>"), added(kEos, "</s>")})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         json::array({{{"type", "Prepend"}, {"prepend", "▁"}},
                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {kBos}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                                  {{"type", "ByteFallback"}},
                                  {{"type", "Fuse"}},
                                  {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merges}}}};
}

// The newer layout of the same vocabulary: a Metaspace pre-tokenizer and decoder, no normalizer.
json MetaspaceStyleJson(const std::string& prepend_scheme, bool split) {
  json doc = MixtralStyleJson();
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", split}};
  doc["decoder"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", split}};
  return doc;
}

std::unique_ptr<Tokenizer> Load(const json& doc) {
  StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(doc.dump(), "mixtral.json");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

Status LoadError(const json& doc) {
  StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(doc.dump(), "mixtral.json");
  EXPECT_FALSE(t.ok());
  return t.ok() ? Status::Ok() : t.status();
}

std::string Dec(const Tokenizer& t, const Ids& ids, bool skip_special = false) {
  StatusOr<std::string> s = t.Decode(ids, skip_special);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : std::string();
}

class SentencePieceBpeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = Load(MixtralStyleJson());
    ASSERT_NE(tok_, nullptr);
  }
  Ids Enc(std::string_view text) const { return tok_->Encode(text, /*add_special_tokens=*/false); }
  std::string Dec(const Ids& ids, bool skip_special = false) const {
    return moerun::Dec(*tok_, ids, skip_special);
  }

  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(SentencePieceBpeTest, LoadsAsCharacterLevel) {
  EXPECT_FALSE(tok_->byte_level());
  EXPECT_EQ(tok_->vocab_size(), kSpHello + 1);
  EXPECT_EQ(*tok_->TokenToPiece(kSpWorld), "▁world");
  EXPECT_EQ(*tok_->TokenToPiece(Byte(0x0A)), "<0x0A>");
  EXPECT_EQ(*tok_->TokenToPiece(kBos), "<s>");
  EXPECT_TRUE(tok_->IsSpecial(kBos));
  EXPECT_EQ(tok_->PieceToId("▁the"), kSpThe);
}

TEST_F(SentencePieceBpeTest, MergesApplyInRankOrderOverTheWholeSection) {
  // "▁Hello▁world": l+l, e+ll, H+ell, Hell+o, ▁+w, o+r, ▁w+or, l+d, ▁wor+ld, then ▁+Hello last.
  EXPECT_EQ(Enc("Hello world"), (Ids{kSpHello, kSpWorld}));
  EXPECT_EQ(Enc("the"), (Ids{kSpThe}));
  // No pre-tokenizer: merges cross what would be word boundaries elsewhere.
  EXPECT_EQ(Enc("tthe"), (Ids{kSpT, kT, kHe}));  // ▁+t (rank 0) wins over h+e, so no ▁the
  EXPECT_EQ(Enc("Hello"), (Ids{kSpHello}));
  EXPECT_TRUE(Enc("").empty());
}

TEST_F(SentencePieceBpeTest, LeadingAndRepeatedSpaces) {
  // Prepend adds one "▁" even before an existing space: " Hello" -> "▁▁Hello"; ▁+▁ (rank 12)
  // merges before ▁+Hello (rank 13).
  EXPECT_EQ(Enc(" Hello"), (Ids{kSpSp, kHello}));
  EXPECT_EQ(Enc("Hello  world"), (Ids{kSpHello, kSpace, kSpWorld}));  // ▁+w (rank 7) beats ▁+▁
  EXPECT_EQ(Enc("  "), (Ids{kSpSp, kSpace}));
  EXPECT_EQ(Dec(Enc(" Hello")), " Hello");  // the decoder strips only the added one
  EXPECT_EQ(Dec(Enc("  ")), "  ");
}

TEST_F(SentencePieceBpeTest, ByteFallbackForCharactersNotInTheVocab) {
  EXPECT_EQ(Enc("你"), (Ids{kSpace, kNi}));
  // "é" is C3 A9; "\n" is 0A; "😀" is F0 9F 98 80.
  EXPECT_EQ(Enc("é"), (Ids{kSpace, Byte(0xC3), Byte(0xA9)}));
  EXPECT_EQ(Enc("he\nllo"), (Ids{kSpace, kHe, Byte(0x0A), kLl, kO}));
  EXPECT_EQ(Enc("😀"), (Ids{kSpace, Byte(0xF0), Byte(0x9F), Byte(0x98), Byte(0x80)}));
  // Ill-formed input reaches the model as U+FFFD (EF BF BD).
  EXPECT_EQ(Enc("\xFF"), (Ids{kSpace, Byte(0xEF), Byte(0xBF), Byte(0xBD)}));
  EXPECT_EQ(Dec(Enc("héllo 😀\n你")), "héllo 😀\n你");
}

TEST_F(SentencePieceBpeTest, DecodeJoinsByteRunsAndReplacesIllFormedOnes) {
  EXPECT_EQ(Dec({kSpace, Byte(0xC3), Byte(0xA9)}), "é");
  EXPECT_EQ(Dec({kHe, Byte(0xC3)}), "he\uFFFD");       // a cut character
  EXPECT_EQ(Dec({Byte(0xE4), Byte(0xBD)}), "\uFFFD");  // one maximal subpart
  EXPECT_EQ(Dec({Byte(0xFF), Byte(0x41)}), "\uFFFDA");
  EXPECT_EQ(*tok_->DecodeBytes(Ids{Byte(0xE4), Byte(0xBD)}, false), "\xE4\xBD");
}

TEST_F(SentencePieceBpeTest, DecodeStripsOnlyTheSequenceStartSpace) {
  EXPECT_EQ(Dec({kSpHello, kSpWorld}), "Hello world");
  // DecodeBytes is a continuation: its pieces concatenate.
  EXPECT_EQ(*tok_->DecodeBytes(Ids{kSpHello, kSpWorld}, false), " Hello world");
  EXPECT_EQ(*tok_->DecodeBytes(Ids{kSpHello}, false) + *tok_->DecodeBytes(Ids{kSpWorld}, false),
            " Hello world");
  // As HF: special tokens go through the decoder too, so only a leading space is stripped.
  EXPECT_EQ(Dec({kBos, kSpHello, kEos}), "<s> Hello</s>");
  EXPECT_EQ(Dec({kBos, kSpHello, kEos}, /*skip_special=*/true), "Hello");
  EXPECT_EQ(Dec({kUnk}), "<unk>");
}

TEST_F(SentencePieceBpeTest, SpecialTokensAndThePostProcessor) {
  EXPECT_EQ(tok_->Encode("Hello world", true), (Ids{kBos, kSpHello, kSpWorld}));
  // Added tokens are cut out first; the normalizer then prepends "▁" to every section (HF's
  // legacy behaviour for this layout).
  EXPECT_EQ(Enc("<s>Hello</s>"), (Ids{kBos, kSpHello, kEos}));
  EXPECT_EQ(Enc("Hello</s>world"), (Ids{kSpHello, kEos, kSpWorld}));
  EXPECT_EQ(Enc("<s>"), (Ids{kBos}));
  EXPECT_EQ(Enc("<s"), (Ids{kSpace, Byte('<'), Byte('s')}));
}

TEST_F(SentencePieceBpeTest, UnknownCharactersWithoutByteFallback) {
  json doc = MixtralStyleJson();
  doc["model"]["byte_fallback"] = false;
  std::unique_ptr<Tokenizer> t = Load(doc);
  ASSERT_NE(t, nullptr);
  // fuse_unk: a run of unknown characters is one <unk>.
  EXPECT_EQ(t->Encode("héé€lo", false), (Ids{kSpace, kH, kUnk, kL, kO}));
  EXPECT_EQ(t->Encode("é", false), (Ids{kSpace, kUnk}));
  doc["model"]["fuse_unk"] = false;
  t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("héé€lo", false), (Ids{kSpace, kH, kUnk, kUnk, kUnk, kL, kO}));
  // No unk_token either: HF drops the character.
  doc["model"]["unk_token"] = nullptr;
  t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("héllo", false), (Ids{kSpace, kH, kLl, kO}));
}

TEST_F(SentencePieceBpeTest, ByteFallbackNeedsEveryByteOfTheCharacter) {
  json doc = MixtralStyleJson();
  doc["model"]["vocab"].erase("<0xA9>");
  std::unique_ptr<Tokenizer> t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("éè", false), (Ids{kSpace, kUnk, Byte(0xC3), Byte(0xA8)}));  // é: A9 missing
}

TEST(SentencePieceMetaspaceTest, PrependSchemeFirst) {
  std::unique_ptr<Tokenizer> t = Load(MetaspaceStyleJson("first", false));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("Hello world", false), (Ids{kSpHello, kSpWorld}));
  // Metaspace does not prepend to text that already starts with a space.
  EXPECT_EQ(t->Encode(" Hello", false), (Ids{kSpHello}));
  // "first": no "▁" after an added token.
  EXPECT_EQ(t->Encode("<s>Hello", false), (Ids{kBos, kHello}));
  EXPECT_EQ(t->Encode("<s> Hello", false), (Ids{kBos, kSpHello}));
  // The decoder removes the replacement from the first token only.
  EXPECT_EQ(Dec(*t, {kSpHello, kSpWorld}), "Hello world");
  EXPECT_EQ(Dec(*t, {kBos, kHello}), "<s>Hello");
  EXPECT_EQ(Dec(*t, {kSpSp, kHello}), "Hello");  // HF removes every "▁" of the first token
  EXPECT_EQ(*t->DecodeBytes(Ids{kSpHello}, false), " Hello");
}

TEST(SentencePieceMetaspaceTest, PrependSchemeAlwaysAndSplit) {
  std::unique_ptr<Tokenizer> always = Load(MetaspaceStyleJson("always", false));
  ASSERT_NE(always, nullptr);
  EXPECT_EQ(always->Encode("<s>Hello", false), (Ids{kBos, kSpHello}));
  std::unique_ptr<Tokenizer> never = Load(MetaspaceStyleJson("never", false));
  ASSERT_NE(never, nullptr);
  EXPECT_EQ(never->Encode("Hello", false), (Ids{kHello}));
  EXPECT_EQ(Dec(*never, {kSpHello}), " Hello");
  // split: the piece is cut before each "▁", so "▁▁" cannot merge.
  std::unique_ptr<Tokenizer> split = Load(MetaspaceStyleJson("first", true));
  std::unique_ptr<Tokenizer> whole = Load(MetaspaceStyleJson("first", false));
  ASSERT_NE(split, nullptr);
  ASSERT_NE(whole, nullptr);
  EXPECT_EQ(split->Encode("Hello  ", false), (Ids{kSpHello, kSpace, kSpace}));
  EXPECT_EQ(whole->Encode("Hello  ", false), (Ids{kSpHello, kSpSp}));
  // Legacy files spell the scheme as add_prefix_space.
  json legacy = MetaspaceStyleJson("first", false);
  legacy["pre_tokenizer"].erase("prepend_scheme");
  legacy["pre_tokenizer"]["add_prefix_space"] = true;
  std::unique_ptr<Tokenizer> t = Load(legacy);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("<s>Hello", false), (Ids{kBos, kSpHello}));  // "always"
}

TEST(SentencePieceLoadTest, ErrorsNameTheField) {
  const auto expect_error = [](const json& doc, StatusCode code, const std::vector<std::string>& words) {
    const Status s = LoadError(doc);
    EXPECT_EQ(s.code(), code) << s.ToString();
    for (const std::string& w : words) EXPECT_NE(s.message().find(w), std::string::npos) << s.ToString();
  };
  json doc = MetaspaceStyleJson("sometimes", false);
  expect_error(doc, StatusCode::kCorruption, {"pre_tokenizer.prepend_scheme", "sometimes"});

  doc = MetaspaceStyleJson("first", false);
  doc["pre_tokenizer"]["add_prefix_space"] = false;
  expect_error(doc, StatusCode::kCorruption, {"pre_tokenizer.add_prefix_space"});

  doc = MixtralStyleJson();
  doc["normalizer"]["normalizers"][1] = {{"type", "NFKC"}};
  expect_error(doc, StatusCode::kUnimplemented, {"normalizer.normalizers[1].type", "NFKC"});

  doc = MixtralStyleJson();
  doc["normalizer"]["normalizers"][1]["pattern"] = {{"String", " "}, {"Regex", " "}};
  expect_error(doc, StatusCode::kCorruption, {"normalizer.normalizers[1].pattern"});

  doc = MixtralStyleJson();
  doc["decoder"]["decoders"][3] = {{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", "b"}};
  expect_error(doc, StatusCode::kUnimplemented, {"decoder.decoders[3].type", "after Fuse"});

  doc = MixtralStyleJson();
  doc["decoder"]["decoders"][3]["start"] = -1;
  expect_error(doc, StatusCode::kCorruption, {"decoder.decoders[3].start"});

  doc = MixtralStyleJson();
  doc["decoder"] = {{"type", "ByteLevel"}};
  expect_error(doc, StatusCode::kUnimplemented, {"decoder", "ByteLevel"});

  doc = MixtralStyleJson();
  doc["model"]["unk_token"] = "<missing>";
  expect_error(doc, StatusCode::kCorruption, {"model.unk_token", "<missing>"});

  doc = MixtralStyleJson();
  doc["added_tokens"][1]["normalized"] = true;
  expect_error(doc, StatusCode::kUnimplemented, {"added_tokens[1].normalized"});
}

TEST(SentencePieceNormalizerTest, RegexReplace) {
  json doc = MixtralStyleJson();
  // Runs of spaces become one "▁" (a Regex pattern instead of the usual String).
  doc["normalizer"]["normalizers"][1] = {
      {"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "▁"}};
  std::unique_ptr<Tokenizer> t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("Hello   world", false), (Ids{kSpHello, kSpWorld}));
}

}  // namespace
}  // namespace moerun
