#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/atomic_file.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            fmt::format("moerun_st_{}_{}_{}", info ? info->name() : "x", ::getpid(), counter++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }
  // Names of all entries in the directory, sorted.
  std::vector<std::string> List() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

// An image "<u64 len><header><data>" exactly as given (no padding).
std::string Image(const std::string& header, const std::string& data = "") {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

std::string Zeros(size_t n) { return std::string(n, '\0'); }

template <typename T>
Tensor MakeTensor(DType dtype, Shape shape, const std::vector<T>& values) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape)).value();
  EXPECT_EQ(t.nbytes(), values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

std::string Bytes(const Tensor& t) { return std::string(static_cast<const char*>(t.raw()), t.nbytes()); }

// Asserts `st` has `code` and its message contains every one of `needles`.
void ExpectError(const Status& st, StatusCode code, std::initializer_list<std::string> needles) {
  EXPECT_EQ(st.code(), code) << st.ToString();
  for (const std::string& n : needles) {
    EXPECT_NE(st.message().find(n), std::string::npos) << "missing '" << n << "' in " << st.ToString();
  }
}

Status Load(const std::string& image) { return SafetensorsFile::FromBytes(image, "x.safetensors").status(); }

// ----------------------------------------------------------------------------------------------
// Round trips

std::vector<NamedTensor> SampleTensors() {
  std::vector<NamedTensor> ts;
  ts.emplace_back("f32", MakeTensor<float>(DType::kF32, {2, 3}, {1, -2, 3.5f, 0, 1e30f, -0.0f}));
  ts.emplace_back("bf16",
                  MakeTensor<uint16_t>(DType::kBF16, {3}, {F32ToBf16(1.5f), F32ToBf16(-2), F32ToBf16(3)}));
  ts.emplace_back("f16", MakeTensor<uint16_t>(DType::kF16, {1, 2}, {F32ToF16(0.25f), F32ToF16(-8)}));
  ts.emplace_back("i32", MakeTensor<int32_t>(DType::kI32, {2, 2}, {1, -1, 2147483647, 0}));
  ts.emplace_back("empty", MakeTensor<float>(DType::kF32, {0, 5}, {}));
  ts.emplace_back("scalar", MakeTensor<float>(DType::kF32, {}, {42.0f}));
  ts.emplace_back("u8", MakeTensor<uint8_t>(DType::kU8, {3}, {1, 2, 3}));
  return ts;
}

void ExpectSameTensors(const SafetensorsFile& f, const std::vector<NamedTensor>& ts) {
  ASSERT_EQ(f.entries().size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& [name, want] = ts[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(f.entries()[i].name, name);  // laid out in the given order
    StatusOr<Tensor> got = f.Get(name);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->dtype(), want.dtype());
    EXPECT_EQ(got->shape(), want.shape());
    EXPECT_EQ(Bytes(*got), Bytes(want));
  }
}

TEST(SafetensorsTest, RoundTripInMemory) {
  const auto ts = SampleTensors();
  StatusOr<std::string> image = SerializeSafetensors(ts);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  auto f = SafetensorsFile::FromBytes(*image, "mem");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ExpectSameTensors(**f, ts);
  EXPECT_TRUE((*f)->metadata().empty());
  EXPECT_EQ((*f)->path(), "mem");
}

TEST(SafetensorsTest, RoundTripThroughFile) {
  TempDir dir;
  const auto ts = SampleTensors();
  const std::string path = dir.File("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, ts).ok());
  EXPECT_EQ(dir.List(), std::vector<std::string>{"m.safetensors"});  // no temp file left
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ExpectSameTensors(**f, ts);
  EXPECT_EQ((*f)->path(), path);
}

TEST(SafetensorsTest, DecodedValuesSurvive) {
  const auto ts = SampleTensors();
  auto f = SafetensorsFile::FromBytes(SerializeSafetensors(ts).value(), "mem").value();
  Tensor bf = f->Get("bf16").value().ToF32().value();
  EXPECT_EQ(bf.span<float>()[0], 1.5f);
  EXPECT_EQ(bf.span<float>()[1], -2.0f);
  Tensor h = f->Get("f16").value().ToF32().value();
  EXPECT_EQ(h.span<float>()[1], -8.0f);
  Tensor s = f->Get("scalar").value();
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(s.data<float>()[0], 42.0f);
  Tensor e = f->Get("empty").value();
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.shape(), (Shape{0, 5}));
}

TEST(SafetensorsTest, MetadataRoundTrip) {
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "héllo \"q\""}};
  auto image = SerializeSafetensors(SampleTensors(), meta);
  ASSERT_TRUE(image.ok());
  auto f = SafetensorsFile::FromBytes(*image, "mem");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->metadata(), meta);
  EXPECT_EQ((*f)->Find("__metadata__"), nullptr);
}

TEST(SafetensorsTest, HeaderPaddedToMultipleOf8) {
  for (int n = 1; n < 12; ++n) {
    std::vector<NamedTensor> ts;
    ts.emplace_back(std::string(static_cast<size_t>(n), 'a'), MakeTensor<float>(DType::kF32, {1}, {1.0f}));
    const std::string image = SerializeSafetensors(ts).value();
    uint64_t len = 0;
    std::memcpy(&len, image.data(), 8);
    EXPECT_EQ(len % 8, 0u);
    EXPECT_EQ(image.size(), 8 + len + 4);
    EXPECT_EQ(image[8], '{');
  }
}

TEST(SafetensorsTest, NoTensorsIsValid) {
  auto f = SafetensorsFile::FromBytes(Image("{}      "), "x");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE((*f)->entries().empty());
}

TEST(SafetensorsTest, ZeroSizedTensorsMayShareAnOffset) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("c":{"dtype":"F32","shape":[2,0],"data_offsets":[4,4]}})";
  auto f = SafetensorsFile::FromBytes(Image(h, Zeros(4)), "x");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ((*f)->entries().size(), 3u);
  EXPECT_EQ((*f)->entries()[0].name, "b");  // offset order
}

TEST(SafetensorsTest, GetUnknownNameIsNotFound) {
  auto f = SafetensorsFile::FromBytes(SerializeSafetensors(SampleTensors()).value(), "x.st");
  ASSERT_TRUE(f.ok());
  ExpectError((*f)->Get("nope").status(), StatusCode::kNotFound, {"nope", "x.st"});
  EXPECT_EQ((*f)->Find("nope"), nullptr);
  ASSERT_NE((*f)->Find("i32"), nullptr);
  EXPECT_EQ((*f)->Find("i32")->shape, (Shape{2, 2}));
}

TEST(SafetensorsTest, ViewKeepsFileAlive) {
  TempDir dir;
  const std::string path = dir.File("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, SampleTensors()).ok());
  Tensor t;
  {
    auto f = SafetensorsFile::Open(path).value();
    t = f->Get("f32").value();
    // Aligned data is a view into the mapping, not a copy.
    EXPECT_EQ(f->Get("f32").value().raw(), t.raw());
  }
  EXPECT_EQ(t.data<float>()[2], 3.5f);  // the mapping is still alive
}

TEST(SafetensorsTest, UnalignedOffsetIsCopiedToAlignedMemory) {
  // An unpadded header (as MLX writes) of odd length puts the data buffer at an odd file offset,
  // so the F32 at data offset 2 is misaligned (the image itself is malloc'ed, 16-aligned).
  std::string header = R"({"u":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                       R"("v":{"dtype":"F32","shape":[3],"data_offsets":[2,14]}})";
  if ((8 + header.size()) % 2 == 0) header += " ";
  const float vals[3] = {1.25f, -7.0f, 3e-3f};
  std::string data = "\x01\x02";
  data.append(reinterpret_cast<const char*>(vals), sizeof vals);
  auto f = SafetensorsFile::FromBytes(Image(header, data), "x");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  Tensor v = (*f)->Get("v").value();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.raw()) % alignof(float), 0u);
  EXPECT_EQ(v.data<float>()[0], 1.25f);
  EXPECT_EQ(v.data<float>()[1], -7.0f);
  EXPECT_EQ(v.data<float>()[2], 3e-3f);
  Tensor u = (*f)->Get("u").value();
  EXPECT_EQ(u.data<uint8_t>()[1], 2);
}

TEST(SafetensorsTest, OpenMissingFileIsNotFound) {
  TempDir dir;
  ExpectError(SafetensorsFile::Open(dir.File("nope.safetensors")).status(), StatusCode::kNotFound,
              {"nope.safetensors"});
}

TEST(SafetensorsTest, OpenDirectoryIsRejected) {
  TempDir dir;
  EXPECT_FALSE(SafetensorsFile::Open(dir.path().string()).ok());
}

TEST(SafetensorsTest, OpenEmptyFileIsCorruption) {
  TempDir dir;
  std::ofstream(dir.File("e.safetensors")).close();
  ExpectError(SafetensorsFile::Open(dir.File("e.safetensors")).status(), StatusCode::kCorruption,
              {"e.safetensors", "too small"});
}

TEST(SafetensorsTest, OpenRejectsCorruptFileNamingIt) {
  TempDir dir;
  const std::string path = dir.File("bad.safetensors");
  ASSERT_TRUE(WriteFileAtomically(path, Image("[]")).ok());
  ExpectError(SafetensorsFile::Open(path).status(), StatusCode::kCorruption, {path});
}

// ----------------------------------------------------------------------------------------------
// Rejections: one test per kind.

TEST(SafetensorsRejectTest, FileSmallerThanLengthPrefix) {
  ExpectError(Load("\x02\x00\x00"), StatusCode::kCorruption, {"x.safetensors", "too small"});
}

TEST(SafetensorsRejectTest, HugeHeaderLength) {
  std::string image(8, '\0');
  image[5] = 1;  // 2^40
  image += "{}";
  ExpectError(Load(image), StatusCode::kOutOfRange, {"x.safetensors", "1099511627776", "100000000"});
  ExpectError(Load(std::string(8, '\xff') + "{}"), StatusCode::kOutOfRange, {"x.safetensors"});
}

TEST(SafetensorsRejectTest, HeaderLongerThanFile) {
  std::string image = Image(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})");
  image.resize(image.size() - 3);
  ExpectError(Load(image), StatusCode::kCorruption, {"x.safetensors", "header length"});
}

TEST(SafetensorsRejectTest, EmptyHeader) {
  ExpectError(Load(Image("")), StatusCode::kCorruption, {"x.safetensors", "'{'"});
}

TEST(SafetensorsRejectTest, HeaderNotStartingWithBrace) {
  ExpectError(Load(Image(" {}")), StatusCode::kCorruption, {"x.safetensors", "'{'"});
  ExpectError(Load(Image("[]")), StatusCode::kCorruption, {"x.safetensors", "'{'"});
}

TEST(SafetensorsRejectTest, BadJson) {
  ExpectError(Load(Image(R"({"a": {"dtype": "F32",)")), StatusCode::kCorruption,
              {"x.safetensors", "invalid JSON"});
  ExpectError(Load(Image("{} x")), StatusCode::kCorruption, {"x.safetensors", "invalid JSON"});
  ExpectError(Load(Image("{\"\xff\":1}")), StatusCode::kCorruption, {"x.safetensors"});
}

TEST(SafetensorsRejectTest, DeepNesting) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[[[1]]],"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"x.safetensors", "'a'", "deeper"});
  ExpectError(Load(Image("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}")),
              StatusCode::kCorruption, {"deeper"});
}

TEST(SafetensorsRejectTest, HugeRank) {
  std::string shape = "[1";
  for (int i = 0; i < 100; ++i) shape += ",1";
  shape += "]";
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"'a'", "64"});
}

TEST(SafetensorsRejectTest, EntryNotObject) {
  ExpectError(Load(Image(R"({"gate": [0, 4]})")), StatusCode::kCorruption,
              {"x.safetensors", "tensor 'gate'", "object"});
  ExpectError(Load(Image(R"({"gate": "F32"})")), StatusCode::kCorruption, {"tensor 'gate'"});
}

TEST(SafetensorsRejectTest, MissingField) {
  ExpectError(Load(Image(R"({"gate":{"dtype":"F32","shape":[1]}})", Zeros(4))), StatusCode::kCorruption,
              {"tensor 'gate'", "missing field 'data_offsets'"});
}

TEST(SafetensorsRejectTest, ExtraField) {
  ExpectError(Load(Image(R"({"gate":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'gate'", "unknown field 'x'"});
}

TEST(SafetensorsRejectTest, UnknownDtype) {
  ExpectError(Load(Image(R"({"gate":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'gate'", "unknown dtype 'Q7'"});
  ExpectError(Load(Image(R"({"gate":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'gate'", "dtype"});
}

TEST(SafetensorsRejectTest, UnsupportedDtype) {
  ExpectError(Load(Image(R"({"w":{"dtype":"F8_E5M2","shape":[4],"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kUnimplemented, {"tensor 'w'", "F8_E5M2"});
}

// DeepSeek-V3's FP8 weights: one byte per element, read as stored (a zero-copy view of the codes).
TEST(SafetensorsTest, F8E4M3ReadsAsStored) {
  const std::string codes("\x38\x7e\x01\xff\x80\x00", 6);
  auto f = SafetensorsFile::FromBytes(
      Image(R"({"w":{"dtype":"F8_E4M3","shape":[2,3],"data_offsets":[0,6]}})", codes), "x.safetensors");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const Tensor t = (*f)->Get("w").value();
  EXPECT_EQ(t.dtype(), DType::kF8_E4M3);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(std::string(static_cast<const char*>(t.raw()), 6), codes);
  EXPECT_FALSE(t.ToF32().ok());  // never decoded without its scales
  // A size that does not match one byte per element is corrupt.
  ExpectError(Load(Image(R"({"w":{"dtype":"F8_E4M3","shape":[2,3],"data_offsets":[0,12]}})", Zeros(12))),
              StatusCode::kCorruption, {"tensor 'w'", "F8_E4M3 [2, 3] needs 6"});
}

TEST(SafetensorsRejectTest, DuplicateTensorName) {
  const std::string h = R"({"gate":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("gate":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  ExpectError(Load(Image(h, Zeros(8))), StatusCode::kCorruption, {"x.safetensors", "duplicate", "'gate'"});
}

TEST(SafetensorsRejectTest, DuplicateField) {
  const std::string h = R"({"gate":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
  ExpectError(Load(Image(h, Zeros(4))), StatusCode::kCorruption, {"duplicate key 'dtype'", "'gate'"});
}

TEST(SafetensorsRejectTest, OverflowingShape) {
  ExpectError(Load(Image(R"({"big":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
                         R"("data_offsets":[0,4]}})",
                         Zeros(4))),
              StatusCode::kOutOfRange, {"x.safetensors", "tensor 'big'", "overflows"});
  // numel fits, numel * itemsize does not.
  ExpectError(Load(Image(R"({"big":{"dtype":"F32","shape":[4611686018427387904],)"
                         R"("data_offsets":[0,4]}})",
                         Zeros(4))),
              StatusCode::kOutOfRange, {"tensor 'big'", "overflows"});
  // Empty, but the other dims multiply past int64.
  ExpectError(Load(Image(R"({"big":{"dtype":"F32","shape":[0,4294967296,4294967296],)"
                         R"("data_offsets":[0,0]}})")),
              StatusCode::kOutOfRange, {"tensor 'big'"});
  ExpectError(Load(Image(R"({"big":{"dtype":"F32","shape":[9223372036854775808],)"
                         R"("data_offsets":[0,0]}})")),
              StatusCode::kCorruption, {"tensor 'big'", "shape[0]"});
}

TEST(SafetensorsRejectTest, SizeMismatch) {
  ExpectError(
      Load(Image(R"({"gate.weight":{"dtype":"BF16","shape":[64,2048],"data_offsets":[0,100]}})", Zeros(100))),
      StatusCode::kCorruption,
      {"x.safetensors: tensor 'gate.weight': data_offsets [0, 100] hold 100 bytes, but BF16 "
       "[64, 2048] needs 262144"});
}

TEST(SafetensorsRejectTest, EndBeforeBegin) {
  ExpectError(Load(Image(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "[4, 0]"});
}

TEST(SafetensorsRejectTest, Gap) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  ExpectError(Load(Image(h, Zeros(12))), StatusCode::kCorruption, {"tensor 'b'", "gap", "'a' ends at 4"});
}

TEST(SafetensorsRejectTest, FirstTensorNotAtZero) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", Zeros(8))),
              StatusCode::kCorruption, {"tensor 'a'", "gap"});
}

TEST(SafetensorsRejectTest, Overlap) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  ExpectError(Load(Image(h, Zeros(12))), StatusCode::kCorruption, {"tensor 'b'", "overlap", "'a' ends at 8"});
  // Two tensors over the same bytes (the safetensors "overlap DoS").
  const std::string same = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ExpectError(Load(Image(same, Zeros(8))), StatusCode::kCorruption, {"tensor 'b'", "overlap"});
}

TEST(SafetensorsRejectTest, TrailingBytes) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", Zeros(6))),
              StatusCode::kCorruption, {"tensor 'a'", "2 trailing bytes"});
  ExpectError(Load(Image("{}", Zeros(3))), StatusCode::kCorruption, {"x.safetensors", "no tensors"});
}

TEST(SafetensorsRejectTest, DataPastEndOfFile) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Zeros(6))),
              StatusCode::kCorruption, {"tensor 'a'", "past the data buffer"});
}

TEST(SafetensorsRejectTest, NegativeOffset) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "data_offsets[0] is -4"});
}

TEST(SafetensorsRejectTest, NonIntegerOffset) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "data_offsets[1]"});
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "data_offsets[1] is string"});
  ExpectError(
      Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999]}})", Zeros(4))),
      StatusCode::kCorruption, {"tensor 'a'", "data_offsets[1]"});
}

TEST(SafetensorsRejectTest, OffsetsWrongLength) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "3 elements"});
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":4}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "data_offsets"});
}

TEST(SafetensorsRejectTest, BadShapeDims) {
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "shape[0] is -1"});
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "shape[0] is the float 1.5"});
  ExpectError(Load(Image(R"({"a":{"dtype":"F32","shape":{},"data_offsets":[0,4]}})", Zeros(4))),
              StatusCode::kCorruption, {"tensor 'a'", "shape"});
}

TEST(SafetensorsRejectTest, MetadataNotStringToString) {
  ExpectError(Load(Image(R"({"__metadata__":{"format":1}})")), StatusCode::kCorruption,
              {"x.safetensors", "__metadata__", "'format'"});
  ExpectError(Load(Image(R"({"__metadata__":"pt"})")), StatusCode::kCorruption,
              {"x.safetensors", "__metadata__"});
  ExpectError(Load(Image(R"({"__metadata__":{"a":{"b":"c"}}})")), StatusCode::kCorruption,
              {"x.safetensors", "__metadata__"});
}

// ----------------------------------------------------------------------------------------------
// Writer

TEST(SafetensorsWriterTest, RejectsDuplicateNames) {
  std::vector<NamedTensor> ts;
  ts.emplace_back("a", MakeTensor<float>(DType::kF32, {1}, {1}));
  ts.emplace_back("a", MakeTensor<float>(DType::kF32, {1}, {2}));
  ExpectError(SerializeSafetensors(ts).status(), StatusCode::kInvalidArgument, {"duplicate", "'a'"});
}

TEST(SafetensorsWriterTest, RejectsReservedName) {
  std::vector<NamedTensor> ts;
  ts.emplace_back("__metadata__", MakeTensor<float>(DType::kF32, {1}, {1}));
  ExpectError(SerializeSafetensors(ts).status(), StatusCode::kInvalidArgument, {"__metadata__"});
}

TEST(SafetensorsWriterTest, RejectsTensorWithoutData) {
  std::vector<NamedTensor> ts;
  ts.emplace_back("nodata", Tensor());  // rank 0 => one element, but no bytes
  ExpectError(SerializeSafetensors(ts).status(), StatusCode::kInvalidArgument, {"'nodata'"});
  float x = 0;
  ts[0].second = Tensor::View(DType::kF32, {1, 1099511627776, 1099511627776}, &x);
  ExpectError(SerializeSafetensors(ts).status(), StatusCode::kOutOfRange, {"'nodata'"});
}

TEST(SafetensorsWriterTest, RejectsInvalidUtf8) {
  std::vector<NamedTensor> ts;
  ts.emplace_back("bad\xff", MakeTensor<float>(DType::kF32, {1}, {1}));
  EXPECT_EQ(SerializeSafetensors(ts).status().code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsWriterTest, FailedWriteLeavesNothing) {
  TempDir dir;
  const std::string path = dir.File("missing_dir/m.safetensors");
  Status st = WriteSafetensors(path, SampleTensors());
  ExpectError(st, StatusCode::kIOError, {path, "No such file or directory"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(dir.List().empty());
}

// ----------------------------------------------------------------------------------------------
// atomic_file

TEST(AtomicFileTest, WritesAndReplaces) {
  TempDir dir;
  const std::string path = dir.File("f.txt");
  ASSERT_TRUE(WriteFileAtomically(path, "old contents").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "new").ok());
  EXPECT_EQ(ReadFileToString(path).value(), "new");
  ASSERT_TRUE(WriteFileAtomically(path, "").ok());
  EXPECT_EQ(ReadFileToString(path).value(), "");
  EXPECT_EQ(dir.List(), std::vector<std::string>{"f.txt"});
}

TEST(AtomicFileTest, FailedRenameRemovesTempAndKeepsTarget) {
  TempDir dir;
  // The target is a non-empty directory, so rename() fails after the temp file was written.
  const std::string path = dir.File("target");
  fs::create_directories(path);
  std::ofstream(dir.File("target/keep")) << "x";
  Status st = WriteFileAtomically(path, "data");
  ExpectError(st, StatusCode::kIOError, {path, "rename"});
  EXPECT_EQ(dir.List(), std::vector<std::string>{"target"});
  EXPECT_TRUE(fs::is_directory(path));
}

TEST(AtomicFileTest, ReadErrors) {
  TempDir dir;
  ExpectError(ReadFileToString(dir.File("nope")).status(), StatusCode::kNotFound, {"nope"});
  ExpectError(ReadFileToString(dir.path().string()).status(), StatusCode::kIOError, {"directory"});
}

}  // namespace
}  // namespace moerun
