// File identity for the rank agreement (comm/rank_agreement.h): what ranks compare instead of
// paths (which may differ between hosts): a file's size and a digest of the bytes that define it.
//
//   kHeader:  .safetensors: the 8-byte length and the JSON header (names, dtypes, shapes,
//             offsets); .gguf: the first 16 MiB (magic, key/values, tensor infos, the start of
//             the data); anything else: the whole file.
//   kContent: the whole file (config.json, tokenizer files, inputs, task files).
//
// A model path (an HF directory or a .gguf file) contributes one field per file moerun reads:
// "model file config.json", "model file model-00001-of-00002.safetensors", ...
// Thread safety: pure functions of the files.
#pragma once

#include <string>

#include "comm/rank_agreement.h"
#include "core/status.h"

namespace moerun {

enum class FileDigest { kHeader, kContent };

// "size 1234 bytes, fnv1a64 ..." of the file at `path`; errors name the path.
StatusOr<std::string> FileIdentity(const std::string& path, FileDigest how);

// Adds field `name` = FileIdentity(path, how).
Status AddFileIdentity(RankFingerprint* fp, std::string name, const std::string& path, FileDigest how);

// The files of a model path: a .gguf file; or a directory's config.json, the index and tokenizer
// files when present, and every .safetensors file (headers); with `config_only` (--load-format
// dummy) config.json and the tokenizer files alone.
Status AddModelIdentity(RankFingerprint* fp, const std::string& model, bool config_only);

}  // namespace moerun
