// OrderedObjectBuilder: a nlohmann::ordered_json object built key by key in O(1) per key.
// ordered_json's operator[] searches the keys linearly, which is quadratic over a 100k-token
// vocabulary or a checkpoint's thousands of tensors. A repeated key keeps its first position and
// takes the new value, as operator[] would. Used by the safetensors writer (io/safetensors.cc) and
// the tokenizer JSON builders (model/gguf_vocab.cc, model/gguf_spm.cc, model/synthetic_tokenizer.cc).
// Thread safety: none; one builder per thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <utility>

namespace moerun {

class OrderedObjectBuilder {
 public:
  using OJson = nlohmann::ordered_json;

  void Put(const std::string& key, OJson value) {
    auto& entries = static_cast<OJson::object_t::Container&>(object_.get_ref<OJson::object_t&>());
    const auto [it, fresh] = index_.emplace(key, entries.size());
    if (fresh) {
      entries.emplace_back(key, std::move(value));
    } else {
      entries[it->second].second = std::move(value);
    }
  }
  OJson Take() && { return std::move(object_); }

 private:
  OJson object_ = OJson::object();
  std::unordered_map<std::string, size_t> index_;  // key -> position in object_
};

}  // namespace moerun
