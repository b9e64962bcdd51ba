#include "io/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "io/atomic_file.h"
#include "io/json_checks.h"

namespace moerun {
namespace {

constexpr std::string_view kSingleFileName = "model.safetensors";
constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
// Real index files are a few MB (DeepSeek-V3: ~9 MB); this bounds a hostile one.
constexpr uint64_t kMaxIndexBytes = 100'000'000;

enum class PathKind { kMissing, kFile, kDirectory, kOther, kError };

PathKind Classify(const std::string& path, int* err) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    *err = errno;
    return *err == ENOENT ? PathKind::kMissing : PathKind::kError;
  }
  if (S_ISREG(st.st_mode)) return PathKind::kFile;
  if (S_ISDIR(st.st_mode)) return PathKind::kDirectory;
  return PathKind::kOther;
}

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (std::filesystem::path(dir) / std::filesystem::path(name)).string();
}

// A shard must be a plain file name inside the checkpoint directory: no separators, no "." or
// "..", no NUL (which would truncate the path the OS sees).
Status CheckShardName(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  const bool bad = shard.empty() || shard == "." || shard == ".." ||
                   shard.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos;
  if (!bad) return Status::Ok();
  return Corruption("{}: tensor '{}' maps to shard '{}', which is not a plain file name", index_path, tensor,
                    shard);
}

// Reads the index file at `index_path` and parses it.
StatusOr<std::map<std::string, std::string>> ReadWeightMap(const std::string& index_path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(index_path, ec);
  if (!ec && size > kMaxIndexBytes) {
    return OutOfRange("{}: {} bytes exceeds the limit of {} bytes for an index file", index_path, size,
                      kMaxIndexBytes);
  }
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
  return ParseCheckpointIndex(text, index_path);
}

}  // namespace

StatusOr<std::map<std::string, std::string>> ParseCheckpointIndex(std::string_view text,
                                                                  const std::string& index_path) {
  if (text.size() > kMaxIndexBytes) {
    return OutOfRange("{}: more than {} bytes", index_path, kMaxIndexBytes);
  }
  RETURN_IF_ERROR(internal::CheckJsonStructure(text, internal::JsonLimits{}, index_path));
  const nlohmann::json root =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return Corruption("{}: not a JSON object", index_path);
  }
  const auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object()) {
    return Corruption("{}: missing \"weight_map\" object", index_path);
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string()) {
      return Corruption("{}: weight_map entry for tensor '{}' is a {}, not a shard file name", index_path,
                        name, shard.type_name());
    }
    weight_map.emplace(name, shard.get_ref<const std::string&>());
  }
  // Check every shard name before any file is opened.
  for (const auto& [name, shard] : weight_map) {
    RETURN_IF_ERROR(CheckShardName(index_path, name, shard));
  }
  return weight_map;
}

StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->path_ = path;
  int err = 0;
  switch (Classify(path, &err)) {
    case PathKind::kFile:
      RETURN_IF_ERROR(ckpt->AddWholeFile(path));
      return ckpt;
    case PathKind::kDirectory:
      break;
    case PathKind::kMissing:
      return NotFound("checkpoint '{}': no such file or directory", path);
    case PathKind::kError:
      return IOError("checkpoint '{}': cannot stat: {}", path,
                     std::error_code(err, std::generic_category()).message());
    case PathKind::kOther:
      return InvalidArgument("checkpoint '{}': not a file or directory", path);
  }
  const std::string single = JoinPath(path, kSingleFileName);
  const std::string index = JoinPath(path, kIndexFileName);
  if (Classify(single, &err) != PathKind::kMissing) {
    RETURN_IF_ERROR(ckpt->AddWholeFile(single));
  } else if (Classify(index, &err) != PathKind::kMissing) {
    RETURN_IF_ERROR(ckpt->AddShards(path, index));
  } else {
    return NotFound("checkpoint directory '{}' has neither {} nor {}", path, kSingleFileName, kIndexFileName);
  }
  return ckpt;
}

Status Checkpoint::AddWholeFile(const std::string& file) {
  ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> f, SafetensorsFile::Open(file));
  files_.push_back(std::move(f));
  for (const SafetensorsEntry& e : files_.back()->entries()) file_of_.emplace(e.name, 0);
  return Status::Ok();
}

Status Checkpoint::AddShards(const std::string& dir, const std::string& index_path) {
  // Every shard name is checked (ParseCheckpointIndex) before any file is opened.
  ASSIGN_OR_RETURN(auto weight_map, ReadWeightMap(index_path));
  std::map<std::string, size_t> shard_index;  // shard file name -> files_ index
  for (const auto& [name, shard] : weight_map) {
    auto it = shard_index.find(shard);
    if (it == shard_index.end()) {
      StatusOr<std::shared_ptr<SafetensorsFile>> f = SafetensorsFile::Open(JoinPath(dir, shard));
      if (!f.ok()) {
        return f.status().WithContext(
            fmt::format("{}: shard '{}' (holding tensor '{}')", index_path, shard, name));
      }
      files_.push_back(std::move(f).value());
      it = shard_index.emplace(shard, files_.size() - 1).first;
    }
    if (files_[it->second]->Find(name) == nullptr) {
      return Corruption("{}: tensor '{}' is mapped to shard '{}', but {} has no such tensor", index_path,
                        name, shard, files_[it->second]->path());
    }
    file_of_.emplace(name, it->second);
  }
  // Every header tensor of every shard must be mapped to that shard, and only to it.
  for (const auto& [shard, i] : shard_index) {
    for (const SafetensorsEntry& e : files_[i]->entries()) {
      auto wm = weight_map.find(e.name);
      if (wm == weight_map.end()) {
        return Corruption("{}: tensor '{}' is in shard '{}' but not in the weight_map", index_path, e.name,
                          shard);
      }
      if (wm->second != shard) {
        return Corruption(
            "{}: tensor '{}' is in two shards, '{}' and '{}' (the weight_map names "
            "'{}')",
            index_path, e.name, wm->second, shard, wm->second);
      }
    }
  }
  return Status::Ok();
}

StatusOr<Tensor> Checkpoint::Get(std::string_view name) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return NotFound("checkpoint '{}': no tensor '{}'", path_, name);
  return files_[it->second]->Get(name);
}

const SafetensorsEntry* Checkpoint::Find(std::string_view name) const {
  auto it = file_of_.find(name);
  return it == file_of_.end() ? nullptr : files_[it->second]->Find(name);
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(file_of_.size());
  for (const auto& [name, unused] : file_of_) names.push_back(name);
  return names;
}

void Checkpoint::ReleaseResidentPages() const {
  for (const auto& f : files_) f->ReleaseResidentPages();
}

}  // namespace moerun
