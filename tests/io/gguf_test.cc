// GGUF reader/writer: a round trip through the streaming writer, and one hand-crafted image per
// defect class (the technique of llama.cpp's tests/test-gguf.cpp): each must be refused with a
// status naming the file, the key or tensor and the bound, never crash.
#include "io/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/atomic_file.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

// A GGUF image built by hand.
struct Image {
  std::string b;
  void U32(uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
  void U64(uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
  void Str(std::string_view s) {
    U64(s.size());
    b.append(s);
  }
  void Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    U32(kGgufMagic);
    U32(version);
    U64(n_tensors);
    U64(n_kv);
  }
  void KvU32(std::string_view key, uint32_t v) {
    Str(key);
    U32(static_cast<uint32_t>(GgufType::kU32));
    U32(v);
  }
  void Tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Str(name);
    U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t x : ne) U64(x);
    U32(type);
    U64(offset);
  }
  void PadData(uint64_t data_bytes, uint32_t align = 32) {
    b.append((align - b.size() % align) % align, '\0');
    b.append(data_bytes, '\x11');
  }
};

// One F32 [2, 4] tensor "w" (32 bytes), with `kv` keys before it.
std::string ValidImage() {
  Image im;
  im.Header(1, 1);
  im.KvU32("general.x", 7);
  im.Tensor("w", {4, 2}, 0, 0);
  im.PadData(32);
  return im.b;
}

Status Parse(const std::string& bytes) { return GgufFile::FromBytes(bytes, "img.gguf").status(); }

void ExpectError(const std::string& bytes, StatusCode code, const std::vector<std::string>& words) {
  Status s = Parse(bytes);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_NE(s.message().find("img.gguf"), std::string::npos) << s.message();
  for (const std::string& w : words)
    EXPECT_NE(s.message().find(w), std::string::npos) << s.message() << " / " << w;
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gguf_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(GgufTest, RoundTripEveryKvTypeAndTensorType) {
  auto w = GgufWriter::Create(Path("a.gguf"));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  GgufWriter& wr = **w;
  GgufValue u8;
  u8.type = GgufType::kU8;
  u8.u = 200;
  GgufValue i16;
  i16.type = GgufType::kI16;
  i16.i = -1234;
  GgufValue f64;
  f64.type = GgufType::kF64;
  f64.f = 0.1;
  GgufValue i64;
  i64.type = GgufType::kI64;
  i64.i = -(int64_t{1} << 40);
  ASSERT_TRUE(wr.AddKv("general.architecture", GgufValue::String("deepseek2")).ok());
  ASSERT_TRUE(wr.AddKv("a.u8", u8).ok());
  ASSERT_TRUE(wr.AddKv("a.i16", i16).ok());
  ASSERT_TRUE(wr.AddKv("a.u32", GgufValue::U32(4000000000u)).ok());
  ASSERT_TRUE(wr.AddKv("a.i32", GgufValue::I32(-5)).ok());
  ASSERT_TRUE(wr.AddKv("a.u64", GgufValue::U64(uint64_t{1} << 50)).ok());
  ASSERT_TRUE(wr.AddKv("a.i64", i64).ok());
  ASSERT_TRUE(wr.AddKv("a.f32", GgufValue::F32(1.5f)).ok());
  ASSERT_TRUE(wr.AddKv("a.f64", f64).ok());
  ASSERT_TRUE(wr.AddKv("a.bool", GgufValue::Bool(true)).ok());
  ASSERT_TRUE(wr.AddKv("a.strs", GgufValue::StringArray({"x", "", "Ġthe"})).ok());
  ASSERT_TRUE(wr.AddKv("a.ints", GgufValue::I32Array({1, -2, 3})).ok());
  ASSERT_TRUE(wr.AddKv("a.floats", GgufValue::F32Array({0.5f})).ok());
  EXPECT_EQ(wr.AddKv("a.u8", u8).code(), StatusCode::kInvalidArgument);  // duplicate

  std::vector<float> f32(3 * 5);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) * 0.25f;
  std::vector<uint16_t> f16(2 * 8, 0x3c00), bf16(4, 0x3f80);
  std::vector<uint8_t> q8(2 * 34 * 2);
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i * 7);
  std::vector<int32_t> i32 = {1, 2, 3};
  ASSERT_TRUE(wr.AddTensor("t.f32", DType::kF32, {3, 5}).ok());
  ASSERT_TRUE(wr.AddTensor("t.f16", DType::kF16, {2, 8}).ok());
  ASSERT_TRUE(wr.AddTensor("t.empty", DType::kF32, {0, 4}).ok());
  ASSERT_TRUE(wr.AddTensor("t.bf16", DType::kBF16, {4}).ok());
  ASSERT_TRUE(wr.AddTensor("t.q8", DType::kQ8_0, {2, 64}).ok());
  ASSERT_TRUE(wr.AddTensor("t.i32", DType::kI32, {3}).ok());
  EXPECT_EQ(wr.AddTensor("t.bad", DType::kQ8_0, {2, 48}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wr.AddTensor("t.f32", DType::kF32, {1}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wr.AddTensor(std::string(64, 'n'), DType::kF32, {1}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wr.AddTensor("t.r5", DType::kF32, {1, 1, 1, 1, 1}).code(), StatusCode::kInvalidArgument);
  // Bytes in uneven pieces that cross tensor boundaries.
  std::string all;
  all.append(reinterpret_cast<const char*>(f32.data()), f32.size() * 4);
  all.append(reinterpret_cast<const char*>(f16.data()), f16.size() * 2);
  all.append(reinterpret_cast<const char*>(bf16.data()), bf16.size() * 2);
  all.append(reinterpret_cast<const char*>(q8.data()), q8.size());
  all.append(reinterpret_cast<const char*>(i32.data()), i32.size() * 4);
  for (size_t pos = 0; pos < all.size(); pos += 7) {
    ASSERT_TRUE(wr.Append(all.data() + pos, std::min<size_t>(7, all.size() - pos)).ok());
  }
  EXPECT_EQ(wr.RemainingInCurrentTensor(), 0u);
  ASSERT_TRUE(wr.Finish().ok());
  EXPECT_FALSE(fs::exists(Path("a.gguf") + ".tmp." + std::to_string(::getpid())));

  auto f = GgufFile::Open(Path("a.gguf"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.metadata().size(), 13u);
  EXPECT_EQ(*g.GetString("general.architecture"), "deepseek2");
  EXPECT_EQ(*g.GetInt("a.u8"), 200);
  EXPECT_EQ(*g.GetInt("a.i16"), -1234);
  EXPECT_EQ(*g.GetInt("a.u32"), 4000000000);
  EXPECT_EQ(*g.GetInt("a.i32"), -5);
  EXPECT_EQ(*g.GetInt("a.u64"), int64_t{1} << 50);
  EXPECT_EQ(*g.GetInt("a.i64"), -(int64_t{1} << 40));
  EXPECT_EQ(*g.GetFloat("a.f32"), 1.5);
  EXPECT_EQ(*g.GetFloat("a.f64"), 0.1);
  EXPECT_TRUE(*g.GetBoolOr("a.bool", false));
  EXPECT_EQ(*g.GetStringArray("a.strs"), (std::vector<std::string>{"x", "", "Ġthe"}));
  EXPECT_EQ(*g.GetIntArray("a.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(*g.GetIntOr("absent", 9), 9);
  Status s = g.GetInt("a.f32").status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("a.f32"), std::string::npos);
  EXPECT_EQ(g.GetString("absent").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(g.GetStringArray("a.ints").status().code(), StatusCode::kInvalidArgument);

  ASSERT_EQ(g.tensors().size(), 6u);
  for (const GgufTensorInfo& t : g.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  EXPECT_EQ(g.FindInfo("t.f32")->ne, (std::vector<int64_t>{5, 3}));
  auto t = g.Get("t.f32");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->shape(), (Shape{3, 5}));
  EXPECT_EQ(std::memcmp(t->raw(), f32.data(), f32.size() * 4), 0);
  auto q = g.Get("t.q8");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->dtype(), DType::kQ8_0);
  EXPECT_EQ(q->shape(), (Shape{2, 64}));
  EXPECT_EQ(q->nbytes(), q8.size());
  EXPECT_EQ(std::memcmp(q->raw(), q8.data(), q8.size()), 0);
  auto e = g.Get("t.empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->numel(), 0);
  auto i = g.Get("t.i32");
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->dtype(), DType::kI32);
  EXPECT_EQ(i->data<int32_t>()[2], 3);
  EXPECT_EQ(g.Find("t.bf16")->shape, (Shape{4}));
  EXPECT_EQ(g.Names().size(), 6u);
  EXPECT_EQ(g.Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(GgufTest, CustomAlignmentIsWrittenAndHonoured) {
  auto w = GgufWriter::Create(Path("b.gguf"), 64);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddTensor("a", DType::kF32, {3}).ok());
  ASSERT_TRUE((*w)->AddTensor("b", DType::kF32, {2}).ok());
  const float v[5] = {1, 2, 3, 4, 5};
  ASSERT_TRUE((*w)->Append(v, sizeof v).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto f = GgufFile::Open(Path("b.gguf"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->FindInfo("b")->offset, 64u);
  EXPECT_EQ((*f)->Get("b")->data<float>()[1], 5.0f);
  EXPECT_EQ(GgufWriter::Create(Path("c.gguf"), 48).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(GgufTest, UnfinishedOrOverfullWriterLeavesNothing) {
  {
    auto w = GgufWriter::Create(Path("d.gguf"));
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddTensor("a", DType::kF32, {2}).ok());
    const float v[3] = {1, 2, 3};
    EXPECT_EQ((*w)->Append(v, 4).code(), StatusCode::kOk);
    Status s = (*w)->Finish();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("'a' has 4 of 8 bytes"), std::string::npos) << s.message();
    EXPECT_EQ((*w)->Append(v, 12).code(), StatusCode::kInvalidArgument);  // past the end
    EXPECT_FALSE((*w)->Finish().ok());                                    // sticky
  }
  EXPECT_FALSE(fs::exists(Path("d.gguf")));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST(GgufParse, ValidImageParses) {
  auto f = GgufFile::FromBytes(ValidImage(), "img.gguf");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->Get("w")->shape(), (Shape{2, 4}));
}

TEST(GgufParse, EveryTruncationIsRejected) {
  const std::string img = ValidImage();
  for (size_t n = 0; n < img.size(); ++n) {
    Status s = Parse(img.substr(0, n));
    EXPECT_FALSE(s.ok()) << "prefix of " << n << " bytes";
    EXPECT_TRUE(s.code() == StatusCode::kCorruption || s.code() == StatusCode::kOutOfRange) << s.ToString();
  }
}

TEST(GgufParse, BadMagicAndVersion) {
  std::string img = ValidImage();
  img[0] = 'X';
  ExpectError(img, StatusCode::kCorruption, {"magic"});
  img = ValidImage();
  img[4] = 4;
  ExpectError(img, StatusCode::kUnimplemented, {"version 4"});
  img[4] = 1;
  ExpectError(img, StatusCode::kUnimplemented, {"version 1"});
  img[4] = 2;  // v2 has the same layout as v3
  EXPECT_TRUE(Parse(img).ok());
}

TEST(GgufParse, HugeCounts) {
  Image a;
  a.Header(uint64_t{1} << 40, 0);
  ExpectError(a.b, StatusCode::kOutOfRange, {"tensors", "limit"});
  Image b;
  b.Header(0, ~uint64_t{0});
  ExpectError(b.b, StatusCode::kOutOfRange, {"key/value", "limit"});
  Image c;
  c.Header(1000, 1000);  // under the caps, but the file is far too short
  ExpectError(c.b, StatusCode::kCorruption, {"cannot fit"});
}

TEST(GgufParse, HugeStringAndArrayLengths) {
  Image a;
  a.Header(0, 1);
  a.U64(~uint64_t{0});  // key length
  a.b.append(40, 'k');
  ExpectError(a.b, StatusCode::kOutOfRange, {"key #0", "limit"});
  Image b;
  b.Header(0, 1);
  b.U64(1000);  // within the cap, past the end
  b.b.append(40, 'k');
  ExpectError(b.b, StatusCode::kCorruption, {"key #0", "length 1000"});
  Image c;
  c.Header(0, 1);
  c.Str("tokenizer.ggml.tokens");
  c.U32(static_cast<uint32_t>(GgufType::kArray));
  c.U32(static_cast<uint32_t>(GgufType::kString));
  c.U64(uint64_t{1} << 62);
  c.b.append(64, '\0');
  ExpectError(c.b, StatusCode::kCorruption, {"tokenizer.ggml.tokens", "array"});
  Image d;  // a string element inside an array that runs past the end
  d.Header(0, 1);
  d.Str("tokenizer.ggml.merges");
  d.U32(static_cast<uint32_t>(GgufType::kArray));
  d.U32(static_cast<uint32_t>(GgufType::kString));
  d.U64(2);
  d.Str("a b");
  d.U64(500);
  d.b.append(10, 'x');
  ExpectError(d.b, StatusCode::kCorruption, {"tokenizer.ggml.merges", "[1]"});
}

TEST(GgufParse, UnknownValueTypesAndBadValues) {
  Image a;
  a.Header(0, 1);
  a.Str("k");
  a.U32(13);
  a.U32(0);
  ExpectError(a.b, StatusCode::kCorruption, {"'k'", "unknown value type 13"});
  Image b;
  b.Header(0, 1);
  b.Str("k");
  b.U32(static_cast<uint32_t>(GgufType::kArray));
  b.U32(static_cast<uint32_t>(GgufType::kArray));
  b.U64(0);
  ExpectError(b.b, StatusCode::kUnimplemented, {"'k'", "nested"});
  Image c;
  c.Header(0, 1);
  c.Str("k");
  c.U32(static_cast<uint32_t>(GgufType::kBool));
  c.b.push_back(2);
  ExpectError(c.b, StatusCode::kCorruption, {"'k'", "bool"});
  Image d;
  d.Header(0, 2);
  d.KvU32("k", 1);
  d.KvU32("k", 2);
  ExpectError(d.b, StatusCode::kCorruption, {"duplicate key 'k'"});
}

TEST(GgufParse, Alignment) {
  for (uint32_t bad : {0u, 3u, 48u}) {
    Image a;
    a.Header(0, 1);
    a.KvU32("general.alignment", bad);
    ExpectError(a.b, StatusCode::kCorruption, {"general.alignment", std::to_string(bad)});
  }
  Image b;
  b.Header(0, 1);
  b.Str("general.alignment");
  b.U32(static_cast<uint32_t>(GgufType::kU64));
  b.U64(32);
  ExpectError(b.b, StatusCode::kCorruption, {"general.alignment", "u64", "expected u32"});
  // Offsets must be multiples of the (custom) alignment.
  Image c;
  c.Header(2, 1);
  c.KvU32("general.alignment", 16);
  c.Tensor("a", {4}, 0, 0);
  c.Tensor("b", {4}, 0, 24);
  c.PadData(48, 16);
  ExpectError(c.b, StatusCode::kCorruption, {"'b'", "offset 24", "alignment 16"});
  Image d = c;
  d.b.clear();
  d.Header(2, 1);
  d.KvU32("general.alignment", 16);
  d.Tensor("a", {4}, 0, 0);
  d.Tensor("b", {4}, 0, 16);
  d.PadData(32, 16);
  EXPECT_TRUE(Parse(d.b).ok()) << Parse(d.b).ToString();
}

TEST(GgufParse, TensorInfoDefects) {
  auto one = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, uint64_t data,
                std::string name = "w") {
    Image im;
    im.Header(1, 0);
    im.Tensor(name, std::move(ne), type, offset);
    im.PadData(data);
    return im.b;
  };
  ExpectError(one({4, 1, 1, 1, 1}, 0, 0, 16), StatusCode::kCorruption, {"'w'", "n_dims 5"});
  ExpectError(one({}, 0, 0, 16), StatusCode::kCorruption, {"'w'", "n_dims 0"});
  ExpectError(one({4}, 77, 0, 16), StatusCode::kCorruption, {"'w'", "unknown ggml type id 77"});
  ExpectError(one({4}, 4, 0, 16), StatusCode::kCorruption, {"unknown ggml type id 4"});  // removed Q4_2
  ExpectError(one({48, 2}, 8, 0, 1024), StatusCode::kCorruption, {"'w'", "48", "Q8_0", "block size 32"});
  ExpectError(one({uint64_t{1} << 62, uint64_t{1} << 62}, 0, 0, 16), StatusCode::kOutOfRange, {"'w'"});
  ExpectError(one({~uint64_t{0}}, 0, 0, 16), StatusCode::kCorruption, {"'w'", "ne[0]"});
  ExpectError(one({uint64_t{1} << 61, 4}, 0, 0, 16), StatusCode::kOutOfRange, {"'w'"});  // bytes overflow
  ExpectError(one({4}, 0, 32, 16), StatusCode::kCorruption, {"'w'", "offset 32", "16 bytes"});
  ExpectError(one({8}, 0, 0, 16), StatusCode::kCorruption, {"'w'", "past the data section"});
  ExpectError(one({4}, 0, ~uint64_t{0} - 31, 16), StatusCode::kCorruption, {"'w'"});
  ExpectError(one({4}, 0, 0, 16, std::string(64, 'n')), StatusCode::kCorruption, {"limit of 63"});
  ExpectError(one({4}, 0, 0, 16, ""), StatusCode::kCorruption, {"empty name"});
  Image dup;
  dup.Header(2, 0);
  dup.Tensor("w", {4}, 0, 0);
  dup.Tensor("w", {4}, 0, 32);
  dup.PadData(64);
  ExpectError(dup.b, StatusCode::kCorruption, {"'w'", "duplicate"});
  Image overlap;
  overlap.Header(2, 0);
  overlap.Tensor("a", {16}, 0, 0);
  overlap.Tensor("b", {4}, 0, 32);
  overlap.PadData(64);
  ExpectError(overlap.b, StatusCode::kCorruption, {"'b'", "overlaps", "'a'"});
}

TEST(GgufParse, UnsupportedKnownTypeParsesButGetNamesIt) {
  Image im;
  im.Header(2, 0);
  im.Tensor("blk.3.ffn_down_exps.weight", {256, 2}, 16, 0);  // IQ2_XXS: 66 bytes per block
  im.Tensor("ok", {4}, 0, 160);
  im.PadData(160 + 16);
  auto f = GgufFile::FromBytes(im.b, "img.gguf");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->FindInfo("blk.3.ffn_down_exps.weight")->nbytes, 132u);
  EXPECT_EQ((*f)->Find("blk.3.ffn_down_exps.weight"), nullptr);
  Status s = (*f)->Get("blk.3.ffn_down_exps.weight").status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_EQ(s.message(),
            "img.gguf: blk.3.ffn_down_exps.weight has GGML type IQ2_XXS (16), which moerun cannot read; "
            "requantise the file with llama.cpp's quantize to Q4_K_M or Q8_0");
  EXPECT_TRUE((*f)->Get("ok").ok());
  EXPECT_EQ((*f)->LoadOnlyTypesSummary(), "");
  // The other refused types, by name: Q4_1, Q8_1, Q8_K, the IQ* but IQ4_NL / IQ4_XS, TQ*, MXFP4.
  for (uint32_t id : {3u, 9u, 15u, 17u, 18u, 19u, 21u, 22u, 29u, 34u, 35u, 39u}) {
    const GgmlTypeTraits t = GgmlTypeInfo(id).value();
    Image one;
    one.Header(1, 0);
    one.Tensor("w", {static_cast<uint64_t>(t.block_size)}, id, 0);
    one.PadData(static_cast<size_t>(t.block_bytes));
    auto g = GgufFile::FromBytes(one.b, "one.gguf");
    ASSERT_TRUE(g.ok()) << t.name << ": " << g.status().ToString();
    Status e = (*g)->Get("w").status();
    EXPECT_EQ(e.code(), StatusCode::kUnimplemented) << t.name;
    EXPECT_NE(e.message().find(fmt::format("has GGML type {} ({})", t.name, id)), std::string::npos)
        << e.message();
  }
}

// The load-only block types read as their DTypes (dequantised by callers), with sizes from the
// ggml table that agree with core/dtype.h's.
TEST(GgufParse, LoadOnlyBlockTypesReadAsTheirDTypes) {
  for (uint32_t id = 0; id < 64; ++id) {
    const std::optional<GgmlTypeTraits> t = GgmlTypeInfo(id);
    const std::optional<DType> d = DTypeFromGgml(id);
    if (!d) continue;
    ASSERT_TRUE(t.has_value()) << id;
    EXPECT_EQ(DTypeName(*d), t->name) << id;
    EXPECT_EQ(DTypeBlockSize(*d), t->block_size) << t->name;
    EXPECT_EQ(DTypeBlockBytes(*d), t->block_bytes) << t->name;
    EXPECT_EQ(static_cast<uint32_t>(GgmlFromDType(*d).value()), id) << t->name;
  }
  struct Case {
    uint32_t id;
    DType dtype;
  };
  Image im;
  const Case cases[] = {{6, DType::kQ5_0},  {7, DType::kQ5_1},    {13, DType::kQ5_K},  {11, DType::kQ3_K},
                        {10, DType::kQ2_K}, {20, DType::kIQ4_NL}, {23, DType::kIQ4_XS}};
  im.Header(7, 0);
  uint64_t offset = 0;
  for (const Case& c : cases) {
    const GgmlTypeTraits t = GgmlTypeInfo(c.id).value();
    im.Tensor(fmt::format("t{}", c.id), {static_cast<uint64_t>(t.block_size) * 2, 3}, c.id, offset);
    offset += GgufAlignUp(6 * t.block_bytes, 32);
  }
  im.PadData(static_cast<size_t>(offset));
  auto f = GgufFile::FromBytes(im.b, "img.gguf");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  for (const Case& c : cases) {
    const std::string name = fmt::format("t{}", c.id);
    ASSERT_NE((*f)->Find(name), nullptr) << name;
    EXPECT_EQ((*f)->Find(name)->dtype, c.dtype);
    auto t = (*f)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->dtype(), c.dtype);
    EXPECT_EQ(t->nbytes(), (*f)->FindInfo(name)->nbytes);
    EXPECT_EQ(t->nbytes(), 6 * DTypeBlockBytes(c.dtype));
    EXPECT_TRUE(t->ToF32().ok());  // bytes 0x11: finite values
  }
  EXPECT_EQ((*f)->LoadOnlyTypesSummary(),
            "Q2_K x 1, Q3_K x 1, IQ4_NL x 1, IQ4_XS x 1");  // Q5_0, Q5_1, Q5_K are native
  // Sizes are still checked from the block: a Q5_K row of 128 elements is refused.
  Image bad;
  bad.Header(1, 0);
  bad.Tensor("blk.0.ffn_down_exps.weight", {128, 2}, 13, 0);
  bad.PadData(352);
  ExpectError(bad.b, StatusCode::kCorruption, {"blk.0.ffn_down_exps.weight", "Q5_K", "block size 256"});
  // ... and a truncated one: two Q5_0 rows of 64 need 88 bytes.
  Image cut;
  cut.Header(1, 0);
  cut.Tensor("w", {64, 2}, 6, 0);
  cut.PadData(64);
  ExpectError(cut.b, StatusCode::kCorruption, {"'w'", "88 bytes", "truncated"});
}

TEST(GgufParse, ArraysOfEveryScalarType) {
  Image im;
  im.Header(0, 4);
  auto arr = [&](std::string_view key, GgufType elem, uint64_t n, std::string_view bytes) {
    im.Str(key);
    im.U32(static_cast<uint32_t>(GgufType::kArray));
    im.U32(static_cast<uint32_t>(elem));
    im.U64(n);
    im.b.append(bytes);
  };
  arr("u8", GgufType::kU8, 2, std::string("\x01\xff", 2));
  arr("i16", GgufType::kI16, 1, std::string("\xfd\xff", 2));
  const uint64_t big = (uint64_t{1} << 63) + 1;
  arr("u64", GgufType::kU64, 1, std::string(reinterpret_cast<const char*>(&big), 8));
  const double half = 0.5;
  arr("f64", GgufType::kF64, 1, std::string(reinterpret_cast<const char*>(&half), 8));
  auto f = GgufFile::FromBytes(im.b, "img.gguf");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*(*f)->GetIntArray("u8"), (std::vector<int64_t>{1, 255}));
  EXPECT_EQ(*(*f)->GetIntArray("i16"), (std::vector<int64_t>{-3}));
  Status s = (*f)->GetIntArray("u64").status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'u64'[0]"), std::string::npos) << s.message();
  EXPECT_EQ((*f)->FindKey("f64")->floats, (std::vector<double>{0.5}));
  EXPECT_EQ((*f)->FindKey("u8")->ArraySize(), 2u);
  EXPECT_EQ((*f)->GetIntArray("f64").status().code(), StatusCode::kInvalidArgument);
}

TEST(GgufParse, TensorlessFileNeedsNoPadding) {
  Image im;
  im.Header(0, 1);
  im.KvU32("general.x", 1);
  EXPECT_TRUE(Parse(im.b).ok()) << Parse(im.b).ToString();
}

}  // namespace
}  // namespace moerun
