// Tokenizer tests on the synthetic DeepSeek-V2-structured tokenizer in testdata/synthetic
// (made by testdata/make_synthetic.py: ids 0..255 are the bytes, merged tokens from 256, ids
// 272..299 unused, added tokens 300..304). The real DeepSeek-V3 tokenizer is compared against
// transformers.js by npm_compare.sh.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "io/atomic_file.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace moerun {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

const std::string kDir = MOERUN_TOKENIZER_TESTDATA "/synthetic";
const std::string kBos = "<｜begin▁of▁sentence｜>";
const std::string kEos = "<｜end▁of▁sentence｜>";
constexpr int32_t kBosId = 300, kEosId = 301, kToolId = 302, kToolCallId = 303, kStripId = 304;

std::string ReadTestFile(const std::string& name) {
  StatusOr<std::string> text = ReadFileToString(kDir + "/" + name);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? *text : std::string();
}

json SyntheticJson() { return json::parse(ReadTestFile("tokenizer.json")); }

std::unique_ptr<Tokenizer> Load(const json& doc) {
  StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(doc.dump(), "test.json");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

// The error of loading `doc`, which must fail.
Status LoadError(const json& doc) {
  StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(doc.dump(), "test.json");
  EXPECT_FALSE(t.ok());
  return t.ok() ? Status::Ok() : t.status();
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromDirectory(kDir);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tok_ = std::move(*t);
  }
  Ids Enc(std::string_view text) const { return tok_->Encode(text, /*add_special_tokens=*/false); }
  std::string Dec(const Ids& ids, bool skip_special = false) const {
    StatusOr<std::string> s = tok_->Decode(ids, skip_special);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : std::string();
  }

  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(TokenizerTest, LoadsVocabAddedTokensAndConfig) {
  EXPECT_EQ(tok_->vocab_size(), 305);
  EXPECT_EQ(tok_->bos_id(), kBosId);
  EXPECT_EQ(tok_->eos_id(), kEosId);
  EXPECT_EQ(tok_->bos_token(), kBos);
  EXPECT_EQ(tok_->eos_token(), kEos);
  EXPECT_EQ(tok_->added_tokens().size(), 5u);
  EXPECT_TRUE(tok_->IsSpecial(kBosId));
  EXPECT_FALSE(tok_->IsSpecial(kToolId));
  EXPECT_FALSE(tok_->IsSpecial(260));
  EXPECT_EQ(*tok_->TokenToPiece(263), "Ġthe");
  EXPECT_EQ(*tok_->TokenToPiece(kBosId), kBos);
  EXPECT_EQ(tok_->PieceToId("hello"), 260);
  EXPECT_EQ(tok_->PieceToId(kEos), kEosId);
  EXPECT_FALSE(tok_->PieceToId("nope").has_value());
  EXPECT_EQ(tok_->TokenToPiece(280).status().code(), StatusCode::kOutOfRange);
}

TEST_F(TokenizerTest, MergesApplyInRankOrder) {
  EXPECT_EQ(Enc("hello"), (Ids{260}));
  // "h e" (rank 0) beats the decoy "e l" (rank 2); "he l" has no merge.
  EXPECT_EQ(Enc("hel"), (Ids{256, 'l'}));
  // " the" is one piece (\s?[A-Za-z..]+): h+e, then Ġ+t, then Ġt+he.
  EXPECT_EQ(Enc(" the"), (Ids{263}));
  EXPECT_EQ(Enc("the"), (Ids{'t', 256}));  // "h e" (rank 0) before "t h" (rank 6)
  EXPECT_EQ(Enc("hello the"), (Ids{260, 263}));
}

TEST_F(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  EXPECT_EQ(Enc("aaa"), (Ids{264, 'a'}));
  EXPECT_EQ(Enc("aaaa"), (Ids{264, 264}));
  EXPECT_EQ(Enc("aaaaa"), (Ids{264, 264, 'a'}));
  const Ids long_run = Enc(std::string(100001, 'a'));
  ASSERT_EQ(long_run.size(), 50001u);
  EXPECT_EQ(long_run.back(), 'a');
}

TEST_F(TokenizerTest, DigitsAreSplitOneByOne) {
  EXPECT_EQ(Enc("12"), (Ids{'1', '2'}));  // the "1 2" merge never applies
  EXPECT_EQ(Enc("x2024"), (Ids{'x', '2', '0', '2', '4'}));
  EXPECT_EQ(Enc("3.14159"), (Ids{'3', '.', '1', '4', '1', '5', '9'}));
}

TEST_F(TokenizerTest, ChineseRunsAreOnePiece) {
  EXPECT_EQ(Enc("你好"), (Ids{271}));
  EXPECT_EQ(Enc("你好你"), (Ids{271, 268}));
  EXPECT_EQ(Dec({271, 268}), "你好你");
}

TEST_F(TokenizerTest, WhitespaceAndNewlines) {
  // Pieces "a", "  ", " b": the letter regex takes one space, the rest stays together.
  EXPECT_EQ(Enc("a   b"), (Ids{'a', 266, ' ', 'b'}));
  // Every \r and \n is its own piece.
  EXPECT_EQ(Enc("a\r\nb"), (Ids{'a', '\r', '\n', 'b'}));
  EXPECT_EQ(Enc("\n\n"), (Ids{'\n', '\n'}));
  EXPECT_EQ(Enc("x    "), (Ids{'x', 266, 266}));  // trailing spaces: \s+$
  EXPECT_EQ(Enc("\t\tif"), (Ids{'\t', '\t', 'i', 'f'}));
  EXPECT_TRUE(Enc("").empty());
}

TEST_F(TokenizerTest, RoundTripsValidUtf8) {
  const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog.",
      "def f(x):\n\tif x:\n        return x  # trailing   \r\n",
      "中文分词测试，你好世界！",
      "日本語のテキストです。カタカナ",
      "한국어 텍스트입니다",
      "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇯🇵",
      "   leading and trailing   ",
      "numbers 1234567890 3.14 -42 1e10",
      "mixed <tool>call <tool> text" + kBos + "x" + kEos,
      "Ünïcödé àccents ÆØÅ ß Ωμέγα Кириллица",
      "\u00a0nbsp\u3000ideographic space\u2028line sep",
      std::string("nul\0byte", 8),
  };
  for (const std::string& text : texts) {
    EXPECT_EQ(Dec(Enc(text)), text) << text;
  }
}

TEST_F(TokenizerTest, AddedTokensAreMatchedFirstLongestWins) {
  EXPECT_EQ(Enc(kBos + "hi" + kEos), (Ids{kBosId, 'h', 'i', kEosId}));
  EXPECT_EQ(Enc("<tool>call"), (Ids{kToolCallId}));
  EXPECT_EQ(Enc("<tool>ca"), (Ids{kToolId, 'c', 'a'}));
  EXPECT_EQ(Enc("x<tool><tool>"), (Ids{'x', kToolId, kToolId}));
  for (int32_t id : Enc("<｜begin▁of")) EXPECT_LT(id, 256);  // a prefix alone is plain text
  // lstrip/rstrip swallow the White_Space around the token.
  EXPECT_EQ(Enc("a \u3000<strip>\n b"), (Ids{'a', kStripId, 'b'}));
}

TEST_F(TokenizerTest, DecodeSkipsOnlySpecialTokens) {
  const Ids ids = {kBosId, 'h', 'i', kToolId, kEosId};
  EXPECT_EQ(Dec(ids), kBos + "hi<tool>" + kEos);
  EXPECT_EQ(Dec(ids, /*skip_special=*/true), "hi<tool>");
}

TEST_F(TokenizerTest, AddSpecialTokensFollowsConfigThenTemplate) {
  EXPECT_EQ(tok_->Encode("hi", true), (Ids{kBosId, 'h', 'i'}));  // config: add_bos_token
  // No tokenizer_config.json: the TemplateProcessing post_processor adds BOS.
  StatusOr<std::unique_ptr<Tokenizer>> bare = Tokenizer::FromFile(kDir + "/tokenizer.json");
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
  EXPECT_EQ((*bare)->Encode("hi", true), (Ids{kBosId, 'h', 'i'}));
  EXPECT_EQ((*bare)->Encode("hi", false), (Ids{'h', 'i'}));
  EXPECT_FALSE((*bare)->bos_id().has_value());
  // The config wins over the template.
  json config = json::parse(ReadTestFile("tokenizer_config.json"));
  config["add_bos_token"] = false;
  config["add_eos_token"] = true;
  StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::FromJsonWithConfig(ReadTestFile("tokenizer.json"), "tok", config.dump(), "cfg");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ((*t)->Encode("hi", true), (Ids{'h', 'i', kEosId}));
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideTheVocab) {
  for (int32_t bad : {-1, 305, 1 << 30}) {
    StatusOr<std::string> s = tok_->Decode(Ids{'a', bad}, false);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kOutOfRange);
    EXPECT_NE(s.status().message().find(std::to_string(bad)), std::string::npos) << s.status().message();
    EXPECT_NE(s.status().message().find("305"), std::string::npos) << s.status().message();
  }
  StatusOr<std::string> unused = tok_->Decode(Ids{280}, false);
  ASSERT_FALSE(unused.ok());
  EXPECT_NE(unused.status().message().find("280"), std::string::npos);
}

TEST_F(TokenizerTest, DecodeReplacesIncompleteUtf8) {
  // "你" is E4 BD A0: ids 0xE4 and 0xBD alone are an incomplete character.
  EXPECT_EQ(Dec({0xE4, 0xBD}), "\uFFFD");
  EXPECT_EQ(*tok_->DecodeBytes(Ids{0xE4, 0xBD}, false), "\xE4\xBD");
  EXPECT_EQ(Dec({'a', 0xE4, 0xBD, 0xA0}), "a你");
}

TEST_F(TokenizerTest, InvalidUtf8InputBecomesReplacementCharacters) {
  const Ids replacement = Enc("\uFFFD");
  EXPECT_EQ(replacement, (Ids{0xEF, 0xBF, 0xBD}));
  EXPECT_EQ(Enc(std::string("a\xFF") + "b"), Enc("a\uFFFDb"));
  EXPECT_EQ(Enc("\xE4\xBD"), replacement);                    // truncated: one U+FFFD
  EXPECT_EQ(Enc("\xC0\x80"), Enc("\uFFFD\uFFFD"));            // overlong: two
  EXPECT_EQ(Enc("\xED\xA0\x80"), Enc("\uFFFD\uFFFD\uFFFD"));  // surrogate: three
  EXPECT_EQ(Dec(Enc("ok\x80\xFE你好")), "ok\uFFFD\uFFFD你好");
}

TEST(Utf8Test, SanitizeReplacesMaximalSubparts) {
  using tokenizer_internal::SanitizeUtf8;
  EXPECT_EQ(SanitizeUtf8("plain"), "plain");
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98\x80"), "😀");
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"), "\uFFFD");
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98x"), "\uFFFDx");
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), "\uFFFD\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(SanitizeUtf8("\xE0\x80\x80"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(SanitizeUtf8("\xC2"), "\uFFFD");
  EXPECT_EQ(SanitizeUtf8("\xF8\x88\x80\x80\x80"), "\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD");
}

TEST(TokenizerLoadTest, MergesAsPairsEqualMergesAsStrings) {
  json doc = SyntheticJson();
  json pairs = json::array();
  for (const json& m : doc["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    pairs.push_back(json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)}));
  }
  doc["model"]["merges"] = pairs;
  std::unique_ptr<Tokenizer> t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("hello the 你好", false), (Ids{260, 263, ' ', 271}));
}

TEST(TokenizerLoadTest, IgnoreMergesTakesWholeVocabTokens) {
  json doc = SyntheticJson();
  // "Ġhel" is in the vocab but no merge sequence builds it.
  doc["model"]["vocab"]["Ġhel"] = 299;
  doc["model"]["ignore_merges"] = true;
  std::unique_ptr<Tokenizer> t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode(" hel", false), (Ids{299}));
  doc["model"]["ignore_merges"] = false;
  t = Load(doc);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode(" hel", false), (Ids{' ', 256, 'l'}));
}

TEST(TokenizerLoadTest, ErrorsNameTheField) {
  const auto expect_error = [](const json& doc, StatusCode code, const std::vector<std::string>& words) {
    const Status s = LoadError(doc);
    EXPECT_EQ(s.code(), code) << s.ToString();
    for (const std::string& w : words) EXPECT_NE(s.message().find(w), std::string::npos) << s.ToString();
  };

  StatusOr<std::unique_ptr<Tokenizer>> bad_json = Tokenizer::FromJson("{\"model\": [1, 2", "broken.json");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_EQ(bad_json.status().code(), StatusCode::kCorruption);
  EXPECT_NE(bad_json.status().message().find("broken.json"), std::string::npos);

  json doc = SyntheticJson();
  doc.erase("model");
  expect_error(doc, StatusCode::kCorruption, {"test.json", "model"});

  doc = SyntheticJson();
  doc["model"]["type"] = "Unigram";
  expect_error(doc, StatusCode::kUnimplemented, {"model.type", "Unigram"});

  doc = SyntheticJson();
  doc["model"].erase("vocab");
  expect_error(doc, StatusCode::kCorruption, {"model.vocab"});

  // A SentencePiece-style decoder cannot undo a byte-level pre-tokenizer.
  doc = SyntheticJson();
  doc["decoder"] = {{"type", "Sequence"},
                    {"decoders", json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}};
  expect_error(doc, StatusCode::kUnimplemented, {"decoder", "ByteLevel"});

  doc = SyntheticJson();
  doc["model"]["merges"][3] = "he zz";
  expect_error(doc, StatusCode::kCorruption, {"model.merges[3]", "zz"});

  doc = SyntheticJson();
  doc["model"]["merges"][0] = "hello";
  expect_error(doc, StatusCode::kCorruption, {"model.merges[0]"});

  doc = SyntheticJson();
  doc["model"]["vocab"].erase("z");
  expect_error(doc, StatusCode::kCorruption, {"model.vocab", "0x7A"});

  doc = SyntheticJson();
  doc["model"]["vocab"]["dup"] = 5;
  expect_error(doc, StatusCode::kCorruption, {"model.vocab", "id 5"});

  doc = SyntheticJson();
  doc["model"]["vocab"]["huge"] = int64_t{1} << 40;
  expect_error(doc, StatusCode::kCorruption, {"model.vocab['huge']", "out of range"});

  doc = SyntheticJson();
  doc["pre_tokenizer"]["pretokenizers"][2] = {{"type", "Metaspace"}, {"replacement", "▁"}};
  expect_error(doc, StatusCode::kUnimplemented, {"pre_tokenizer", "Metaspace", "ByteLevel"});

  doc = SyntheticJson();
  doc["pre_tokenizer"]["pretokenizers"][1]["pattern"]["Regex"] = "([a-z";
  expect_error(doc, StatusCode::kInvalidArgument, {"pre_tokenizer.pretokenizers[1].pattern.Regex"});

  doc = SyntheticJson();
  doc["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  expect_error(doc, StatusCode::kCorruption, {"pre_tokenizer.pretokenizers[0].behavior", "Sideways"});

  doc = SyntheticJson();
  doc["pre_tokenizer"]["pretokenizers"].erase(6);  // no ByteLevel
  expect_error(doc, StatusCode::kUnimplemented, {"pre_tokenizer", "ByteLevel"});

  doc = SyntheticJson();
  doc["normalizer"] = {{"type", "NFC"}};
  expect_error(doc, StatusCode::kUnimplemented, {"normalizer.type", "NFC"});

  doc = SyntheticJson();
  doc["decoder"] = {{"type", "CTC"}};
  expect_error(doc, StatusCode::kUnimplemented, {"decoder.type", "CTC"});

  doc = SyntheticJson();
  doc["added_tokens"][1]["content"] = 7;
  expect_error(doc, StatusCode::kCorruption, {"added_tokens[1].content"});

  doc = SyntheticJson();
  doc["added_tokens"][2]["id"] = 300;
  expect_error(doc, StatusCode::kCorruption, {"added_tokens[2].id", "300"});

  doc = SyntheticJson();
  doc["added_tokens"][0]["id"] = 97;  // vocab id 97 is "a"
  expect_error(doc, StatusCode::kCorruption, {"added_tokens[0]", "id 97"});

  doc = SyntheticJson();
  doc["post_processor"]["special_tokens"] = json::object();
  expect_error(doc, StatusCode::kCorruption, {"post_processor.special_tokens"});

  // Duplicate keys are rejected before nlohmann would keep the last one.
  std::string text = SyntheticJson().dump();
  text.replace(text.find("\"model\""), 7, "\"normalizer\":null,\"model\"");
  StatusOr<std::unique_ptr<Tokenizer>> dup = Tokenizer::FromJson(text, "dup.json");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("duplicate key 'normalizer'"), std::string::npos)
      << dup.status().ToString();

  // A config that names a bos_token the tokenizer does not have.
  StatusOr<std::unique_ptr<Tokenizer>> bad_config = Tokenizer::FromJsonWithConfig(
      ReadTestFile("tokenizer.json"), "tok", R"({"bos_token": "<s>"})", "cfg.json");
  ASSERT_FALSE(bad_config.ok());
  EXPECT_NE(bad_config.status().message().find("cfg.json: bos_token: '<s>'"), std::string::npos)
      << bad_config.status().ToString();

  StatusOr<std::unique_ptr<Tokenizer>> missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(TokenizerTest, ChatTemplateRendersDeepSeekV2Format) {
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
  StatusOr<std::string> prompt = tok_->ApplyChatTemplate(messages, /*add_generation_prompt=*/true);
  ASSERT_TRUE(prompt.ok()) << prompt.status().ToString();
  EXPECT_EQ(*prompt, kBos + "Be brief.\n\nUser: Hi\n\nAssistant: Hello!" + kEos + "User: 2+2?\n\nAssistant:");
  prompt = tok_->ApplyChatTemplate(std::vector<ChatMessage>{{"user", "u"}}, false);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, kBos + "User: u\n\n");
  // The special-token strings in the rendered prompt encode as the special ids.
  const Ids ids = tok_->Encode(*prompt, false);
  EXPECT_EQ(ids.front(), kBosId);

  prompt = tok_->ApplyChatTemplate(std::vector<ChatMessage>{{"tool", "x"}}, false);
  ASSERT_FALSE(prompt.ok());
  EXPECT_NE(prompt.status().message().find("'tool'"), std::string::npos);

  StatusOr<std::unique_ptr<Tokenizer>> bare = Tokenizer::FromFile(kDir + "/tokenizer.json");
  ASSERT_TRUE(bare.ok());
  EXPECT_FALSE((*bare)->ApplyChatTemplate(messages, true).ok());

  StatusOr<std::unique_ptr<Tokenizer>> v3 =
      Tokenizer::FromJsonWithConfig(ReadTestFile("tokenizer.json"), "tok",
                                    R"({"chat_template": "{{'<｜User｜>' + message['content']}}"})", "cfg");
  ASSERT_TRUE(v3.ok()) << v3.status().ToString();
  EXPECT_EQ((*v3)->ApplyChatTemplate(messages, true).status().code(), StatusCode::kUnimplemented);
}

TEST_F(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  const std::string text = "hello the 你好 12 emoji 😀 \r\n  tail ";
  const Ids expected = Enc(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      bool all = true;
      for (int k = 0; k < 200; ++k) all = all && tok_->Encode(text, false) == expected;
      ok[static_cast<size_t>(i)] = all ? 1 : 0;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
}

// The pre-tokenizer on its own: Split behaviors (the HF documentation's examples), Digits and
// ByteLevel's GPT-2 regex.
std::vector<std::string> PreTokenize(const json& steps, std::string_view text) {
  json seq = {{"type", "Sequence"}, {"pretokenizers", steps}};
  seq["pretokenizers"].push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}});
  StatusOr<std::unique_ptr<tokenizer_internal::PreTokenizer>> pre =
      tokenizer_internal::PreTokenizer::FromJson(seq, "pre_tokenizer");
  EXPECT_TRUE(pre.ok()) << pre.status().ToString();
  std::vector<std::string> pieces;
  if (pre.ok()) (*pre)->Split(text, &pieces);
  return pieces;
}

json SplitStep(const json& pattern, const std::string& behavior, bool invert = false) {
  return json::array({{{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}}});
}

using Pieces = std::vector<std::string>;

TEST(PreTokenizerTest, SplitBehaviors) {
  const json dash = {{"String", "-"}};
  const std::string text = "the-final--countdown";
  EXPECT_EQ(PreTokenize(SplitStep(dash, "Removed"), text), (Pieces{"the", "final", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitStep(dash, "Isolated"), text),
            (Pieces{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitStep(dash, "MergedWithPrevious"), text),
            (Pieces{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitStep(dash, "MergedWithNext"), text),
            (Pieces{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(PreTokenize(SplitStep(dash, "Contiguous"), text),
            (Pieces{"the", "-", "final", "--", "countdown"}));
  // invert: the pattern marks what to keep.
  EXPECT_EQ(PreTokenize(SplitStep({{"Regex", "[a-z]+"}}, "Removed", /*invert=*/true), text),
            (Pieces{"the", "final", "countdown"}));
  // A String pattern is literal; empty regex matches are skipped.
  EXPECT_EQ(PreTokenize(SplitStep({{"String", "a.b"}}, "Isolated"), "xa.byaxb"),
            (Pieces{"x", "a.b", "yaxb"}));
  EXPECT_EQ(PreTokenize(SplitStep({{"Regex", "x*"}}, "Isolated"), "abxxc"), (Pieces{"ab", "xx", "c"}));
}

TEST(PreTokenizerTest, DigitsAndGpt2Regex) {
  EXPECT_EQ(PreTokenize(json::array({{{"type", "Digits"}, {"individual_digits", false}}}), "ab123c4"),
            (Pieces{"ab", "123", "c", "4"}));
  EXPECT_EQ(PreTokenize(json::array({{{"type", "Digits"}, {"individual_digits", true}}}), "a١٢"),
            (Pieces{"a", "١", "٢"}));  // Arabic-Indic digits are \p{N} too

  const auto gpt2 = [](bool prefix, std::string_view text) {
    json seq = {{"type", "ByteLevel"}, {"add_prefix_space", prefix}, {"use_regex", true}};
    StatusOr<std::unique_ptr<tokenizer_internal::PreTokenizer>> pre =
        tokenizer_internal::PreTokenizer::FromJson(seq, "pre_tokenizer");
    EXPECT_TRUE(pre.ok()) << pre.status().ToString();
    std::vector<std::string> pieces;
    if (pre.ok()) (*pre)->Split(text, &pieces);
    return pieces;
  };
  EXPECT_EQ(gpt2(false, "Hello world's 123  x!!"),
            (Pieces{"Hello", " world", "'s", " 123", " ", " x", "!!"}));
  EXPECT_EQ(gpt2(true, "Hello"), (Pieces{" Hello"}));
  EXPECT_EQ(gpt2(false, "a\n\n  "), (Pieces{"a", "\n\n  "}));
}

}  // namespace
}  // namespace moerun
