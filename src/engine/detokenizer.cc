#include "engine/detokenizer.h"

#include "tokenizer/utf8.h"

namespace moerun {

std::string Detokenizer::Push(int32_t id) {
  if (tokenizer_ == nullptr) return std::string();
  if (!tokenizer_->TokenToPiece(id).ok()) {  // unused or out of range: no text
    ++textless_;
    return std::string();
  }
  StatusOr<std::string> bytes = tokenizer_->DecodeBytes(std::span<const int32_t>(&id, 1), skip_special_);
  if (!bytes.ok()) {
    ++textless_;
    return std::string();
  }
  return PushBytes(*bytes);
}

std::string Detokenizer::PushBytes(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    char32_t cp = 0;
    bool valid = false;
    const size_t n = tokenizer_internal::Utf8Next(pending_, pos, &cp, &valid);
    if (valid) {
      out.append(pending_, pos, n);
    } else {
      // A maximal ill-formed subpart that reaches the end and starts with a lead byte (C2..F4) is
      // a character still being written: hold it back. Anything else can never become valid.
      const auto lead = static_cast<unsigned char>(pending_[pos]);
      if (pos + n == pending_.size() && lead >= 0xC2 && lead <= 0xF4) break;
      out.append(tokenizer_internal::kReplacementChar);
    }
    pos += n;
  }
  pending_.erase(0, pos);
  return out;
}

std::string Detokenizer::Flush() {
  if (pending_.empty()) return std::string();
  pending_.clear();
  return std::string(tokenizer_internal::kReplacementChar);  // one maximal subpart
}

}  // namespace moerun
