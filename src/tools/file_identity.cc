#include "tools/file_identity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "io/atomic_file.h"

namespace moerun {
namespace {

constexpr uint64_t kGgufPrefixBytes = uint64_t{16} << 20;
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;  // the format's own cap

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The bytes that define the file: see the header comment.
StatusOr<uint64_t> DefiningBytes(const std::string& path, uint64_t size, FileDigest how) {
  if (how == FileDigest::kContent) return size;
  if (EndsWith(path, ".gguf")) return std::min(size, kGgufPrefixBytes);
  if (!EndsWith(path, ".safetensors")) return size;
  ASSIGN_OR_RETURN(std::string head, ReadFilePrefix(path, 8));
  if (head.size() < 8) return size;  // too short to be valid: the loader says why
  uint64_t n = 0;
  std::memcpy(&n, head.data(), 8);
  return std::min(size, 8 + std::min(n, kMaxSafetensorsHeader));
}

}  // namespace

StatusOr<std::string> FileIdentity(const std::string& path, FileDigest how) {
  ASSIGN_OR_RETURN(const int fd, OpenReadOnly(path));  // a regular file, or the loader's error
  struct stat st {};
  const bool stated = ::fstat(fd, &st) == 0;
  ::close(fd);
  if (!stated) return IOError("{}: cannot stat", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  ASSIGN_OR_RETURN(const uint64_t n, DefiningBytes(path, size, how));
  ASSIGN_OR_RETURN(std::string bytes, ReadFilePrefix(path, n));
  return fmt::format("size {} bytes, {}{}", size, DigestOf(bytes),
                     n < size ? fmt::format(" of the first {}", n) : "");
}

Status AddFileIdentity(RankFingerprint* fp, std::string name, const std::string& path, FileDigest how) {
  ASSIGN_OR_RETURN(std::string id, FileIdentity(path, how));
  fp->Add(std::move(name), std::move(id));
  return Status::Ok();
}

Status AddModelIdentity(RankFingerprint* fp, const std::string& model, bool config_only) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(model)) return AddFileIdentity(fp, "model file", model, FileDigest::kHeader);
  const std::vector<std::string> small = {"config.json", "model.safetensors.index.json", "tokenizer.json",
                                          "tokenizer_config.json"};
  for (const std::string& name : small) {
    const std::string path = (fs::path(model) / name).string();
    if (name != "config.json" && !fs::exists(path)) continue;
    RETURN_IF_ERROR(AddFileIdentity(fp, "model file " + name, path, FileDigest::kContent));
  }
  if (config_only) return Status::Ok();
  std::vector<std::string> shards;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(model, ec)) {
    if (e.path().extension() == ".safetensors") shards.push_back(e.path().filename().string());
  }
  if (ec) return IOError("{}: {}", model, ec.message());
  std::sort(shards.begin(), shards.end());
  fp->Add("model safetensors files", std::to_string(shards.size()));
  for (const std::string& name : shards) {
    RETURN_IF_ERROR(
        AddFileIdentity(fp, "model file " + name, (fs::path(model) / name).string(), FileDigest::kHeader));
  }
  return Status::Ok();
}

}  // namespace moerun
