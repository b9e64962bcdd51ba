#include "io/checkpoint.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "io/atomic_file.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ =
        fs::temp_directory_path() /
        fmt::format("moerun_ckpt_{}_{}_{}", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                    ::getpid(), counter++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string Dir() const { return dir_.string(); }

  // Writes a shard holding F32 tensors [2] with values {seed, seed + 1} under `names`.
  void WriteShard(const std::string& file, const std::vector<std::string>& names) {
    std::vector<NamedTensor> ts;
    float seed = 0;
    for (const std::string& n : names) {
      Tensor t = Tensor::Zeros(DType::kF32, {2}).value();
      seed = static_cast<float>(n.size()) * 10 + static_cast<float>(ts.size());
      t.data<float>()[0] = seed;
      t.data<float>()[1] = seed + 1;
      ts.emplace_back(n, t);
    }
    ASSERT_TRUE(WriteSafetensors(Path(file), ts).ok());
  }

  void WriteIndex(const std::string& weight_map_json) {
    ASSERT_TRUE(
        WriteFileAtomically(Path("model.safetensors.index.json"),
                            R"({"metadata": {"total_size": 16}, "weight_map": )" + weight_map_json + "}")
            .ok());
  }

  // The standard two-shard layout: a, b in shard 1; c in shard 2.
  void WriteTwoShards() {
    WriteShard("model-00001-of-00002.safetensors", {"a", "b"});
    WriteShard("model-00002-of-00002.safetensors", {"c"});
    WriteIndex(R"({"a": "model-00001-of-00002.safetensors",
                   "b": "model-00001-of-00002.safetensors",
                   "c": "model-00002-of-00002.safetensors"})");
  }

  fs::path dir_;
};

void ExpectError(const Status& st, StatusCode code, std::initializer_list<std::string> needles) {
  EXPECT_EQ(st.code(), code) << st.ToString();
  for (const std::string& n : needles) {
    EXPECT_NE(st.message().find(n), std::string::npos) << "missing '" << n << "' in " << st.ToString();
  }
}

TEST_F(CheckpointTest, ShardedRoundTrip) {
  WriteTwoShards();
  auto ckpt = Checkpoint::Open(Dir());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ((*ckpt)->Names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ((*ckpt)->path(), Dir());
  EXPECT_TRUE((*ckpt)->Has("c"));
  EXPECT_FALSE((*ckpt)->Has("d"));
  Tensor b = (*ckpt)->Get("b").value();
  EXPECT_EQ(b.shape(), (Shape{2}));
  EXPECT_EQ(b.data<float>()[0], 11.0f);
  Tensor c = (*ckpt)->Get("c").value();
  EXPECT_EQ(c.data<float>()[1], 11.0f);
  ASSERT_NE((*ckpt)->Find("a"), nullptr);
  EXPECT_EQ((*ckpt)->Find("a")->dtype, DType::kF32);
  ExpectError((*ckpt)->Get("d").status(), StatusCode::kNotFound, {"'d'", Dir()});
}

TEST_F(CheckpointTest, SingleFilePath) {
  WriteShard("weights.safetensors", {"x", "y"});
  auto ckpt = Checkpoint::Open(Path("weights.safetensors"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ((*ckpt)->Names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*ckpt)->Get("y").value().data<float>()[0], 11.0f);
}

TEST_F(CheckpointTest, DirWithModelSafetensors) {
  WriteShard("model.safetensors", {"w"});
  auto ckpt = Checkpoint::Open(Dir());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ((*ckpt)->Names(), std::vector<std::string>{"w"});
}

TEST_F(CheckpointTest, DirWithNeitherFile) {
  WriteShard("other.safetensors", {"w"});
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kNotFound,
              {Dir(), "model.safetensors", "model.safetensors.index.json"});
}

TEST_F(CheckpointTest, MissingPath) {
  ExpectError(Checkpoint::Open(Path("nope")).status(), StatusCode::kNotFound, {"nope"});
}

TEST_F(CheckpointTest, MissingShard) {
  WriteShard("model-00001-of-00002.safetensors", {"a", "b"});
  WriteIndex(R"({"a": "model-00001-of-00002.safetensors",
                 "b": "model-00001-of-00002.safetensors",
                 "c": "model-00002-of-00002.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kNotFound,
              {"model-00002-of-00002.safetensors", "'c'"});
}

TEST_F(CheckpointTest, PathTraversalShardName) {
  // The checkpoint is dir_/ckpt; a valid shard exists at dir_/x.safetensors, outside it, and must
  // not be read.
  WriteShard("x.safetensors", {"a"});
  fs::create_directories(dir_ / "ckpt");
  ASSERT_TRUE(WriteFileAtomically(Path("ckpt/model.safetensors.index.json"),
                                  R"({"weight_map": {"a": "../x.safetensors"}})")
                  .ok());
  ExpectError(Checkpoint::Open(Path("ckpt")).status(), StatusCode::kCorruption,
              {"'a'", "'../x.safetensors'", "plain file name"});
}

TEST_F(CheckpointTest, BadShardNames) {
  for (const std::string& bad :
       {std::string("sub/x.safetensors"), std::string("..\\\\x"), std::string(".."), std::string("")}) {
    SCOPED_TRACE(bad);
    WriteIndex(R"({"a": ")" + bad + R"("})");
    ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"'a'", "plain"});
  }
  WriteIndex(R"({"a": "x\u0000.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"'a'", "plain"});
}

TEST_F(CheckpointTest, TensorInTwoShards) {
  WriteShard("s1.safetensors", {"a", "b"});
  WriteShard("s2.safetensors", {"b", "c"});
  WriteIndex(R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption,
              {"'b'", "two shards", "s1.safetensors", "s2.safetensors"});
}

TEST_F(CheckpointTest, IndexListsTensorMissingFromShard) {
  WriteShard("s1.safetensors", {"a"});
  WriteIndex(R"({"a": "s1.safetensors", "ghost": "s1.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"'ghost'", "s1.safetensors"});
}

TEST_F(CheckpointTest, ShardTensorMissingFromIndex) {
  WriteShard("s1.safetensors", {"a", "extra"});
  WriteIndex(R"({"a": "s1.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption,
              {"'extra'", "s1.safetensors", "not in the weight_map"});
}

TEST_F(CheckpointTest, DuplicateIndexKey) {
  WriteShard("s1.safetensors", {"a"});
  WriteShard("s2.safetensors", {"b"});
  WriteIndex(R"({"a": "s1.safetensors", "a": "s2.safetensors", "b": "s2.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"duplicate", "'a'"});
}

TEST_F(CheckpointTest, MalformedIndex) {
  ASSERT_TRUE(WriteFileAtomically(Path("model.safetensors.index.json"), "{not json").ok());
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption,
              {"model.safetensors.index.json", "invalid JSON"});
  ASSERT_TRUE(WriteFileAtomically(Path("model.safetensors.index.json"), R"({"metadata": {}})").ok());
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"weight_map"});
  WriteIndex(R"({"a": 3})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"'a'"});
}

TEST_F(CheckpointTest, CorruptShardNamesShardAndFile) {
  WriteShard("s1.safetensors", {"a"});
  ASSERT_TRUE(WriteFileAtomically(Path("s2.safetensors"), std::string(8, '\0')).ok());
  WriteIndex(R"({"a": "s1.safetensors", "b": "s2.safetensors"})");
  ExpectError(Checkpoint::Open(Dir()).status(), StatusCode::kCorruption, {"s2.safetensors", "'b'"});
}

// Reliability: reads never block on a FIFO and never exceed their cap; a dead writer's temporary
// file is removed by the next atomic write.
TEST_F(CheckpointTest, ReadRefusesFifoWithoutBlocking) {
  ASSERT_EQ(::mkfifo(Path("config.json").c_str(), 0644), 0);
  const StatusOr<std::string> text = ReadFileToString(Path("config.json"));  // returns: O_NONBLOCK open
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("not a regular file"), std::string::npos) << text.status().message();
}

TEST_F(CheckpointTest, ReadRefusesFilesOverItsCap) {
  ASSERT_TRUE(WriteFileAtomically(Path("big.json"), std::string(100, ' ')).ok());
  EXPECT_TRUE(ReadFileToString(Path("big.json"), 100).ok());
  const StatusOr<std::string> text = ReadFileToString(Path("big.json"), 99);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("100 bytes, more than the 99 bytes"), std::string::npos)
      << text.status().message();
}

// A file whose size stat does not know (/proc) is still held to the cap while it is read.
TEST_F(CheckpointTest, ReadStopsAtTheCapWhenTheFileOutgrowsItsStat) {
  const StatusOr<std::string> whole = ReadFileToString("/proc/self/status");
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  ASSERT_GT(whole->size(), 20U);
  const StatusOr<std::string> capped = ReadFileToString("/proc/self/status", 20);
  ASSERT_FALSE(capped.ok());
  EXPECT_NE(capped.status().message().find("grew past the 20 bytes"), std::string::npos)
      << capped.status().message();
}

// ReadFilePrefix: the first n bytes, fewer at EOF, across several reads; FIFOs refused.
TEST_F(CheckpointTest, ReadFilePrefixReadsTheFirstBytes) {
  std::string bytes(200000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 % 251);
  ASSERT_TRUE(WriteFileAtomically(Path("blob.bin"), bytes).ok());
  EXPECT_EQ(ReadFilePrefix(Path("blob.bin"), 0).value(), "");
  EXPECT_EQ(ReadFilePrefix(Path("blob.bin"), 5).value(), bytes.substr(0, 5));
  EXPECT_EQ(ReadFilePrefix(Path("blob.bin"), 150000).value(), bytes.substr(0, 150000));
  EXPECT_EQ(ReadFilePrefix(Path("blob.bin"), 1 << 20).value(), bytes);
  ASSERT_EQ(::mkfifo(Path("fifo").c_str(), 0644), 0);
  const StatusOr<std::string> fifo = ReadFilePrefix(Path("fifo"), 8);
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.status().message().find("not a regular file"), std::string::npos) << fifo.status().message();
}

TEST_F(CheckpointTest, AtomicWriteRemovesDeadWritersTemporaries) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);  // a pid that no longer exists
  const std::string orphan = Path("out.json.tmp." + std::to_string(child));
  const std::string live = Path("out.json.tmp.1");  // init: alive, not ours to remove
  ASSERT_TRUE(WriteFileAtomically(orphan, "x").ok());
  ASSERT_TRUE(WriteFileAtomically(live, "x").ok());
  ASSERT_TRUE(WriteFileAtomically(Path("out.json"), "{}").ok());
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_TRUE(fs::exists(live));
}

}  // namespace
}  // namespace moerun
