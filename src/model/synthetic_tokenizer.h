// A synthetic byte-level BPE tokenizer.json of any vocabulary size, for random-weight models
// (make-model): ids 0..255 are the 256 GPT-2 byte symbols, then merged byte pairs, then merged
// (pair, byte) triples, each with a valid merge rule; the config's BOS/EOS ids are DeepSeek's
// special tokens. Its pre-tokenizer is DeepSeek LLM's, so GGUF files record tokenizer.ggml.pre
// "deepseek-llm" and llama.cpp loads them. Text round-trips through it like any byte-level BPE.
// Thread safety: pure function.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace moerun {

// REQUIRES nothing of the ids; fails if vocab_size is below 258 or above 256 + 65536 + 256 * 65536,
// or bos/eos fall outside it.
StatusOr<std::string> SyntheticTokenizerJson(int64_t vocab_size, int64_t bos_id, int64_t eos_id);

}  // namespace moerun
