// Example encoding: rendered text -> input ids and labels, with truncation.
//
// Note [Token ownership]
// The whole rendered text is tokenized once (so ids are exactly what the
// tokenizer gives for the full string, never a concatenation of separately
// tokenized parts). A token is a training target when its first byte lies in
// a completion span (Tokenizer::EncodeWithOffsets gives that byte). Tokens of
// prompts, system and user turns, and template markup get label -100, unless
// `train_on_prompt`, where every token is a target.
//
// Note [Labels and the shift]
// Labels follow the Hugging Face convention: labels[i] is the target *for
// position i*, and the loss compares logits[i] with labels[i + 1]. The first
// token of every example therefore always has label -100: nothing inside the
// example predicts it, and in a packed row this guarantees the last position
// of the previous example never learns to predict the next example's first
// token (see packing.h, which also provides pre-shifted targets).
//
// Truncation keeps the first `context_length` tokens. It is counted, never
// silent: `truncated` is set, and `dropped_eos` when the cut removed the
// final EOS / end-of-turn token. Example:
//
//   EncodeOptions opt{.train_on_prompt = false, .context_length = 2048};
//   auto ex = EncodeRendered(tokenizer, chat.Render(messages, false).value(), opt);
#ifndef RIGTUNE_WORKER_DATA_EXAMPLE_ENCODER_H_
#define RIGTUNE_WORKER_DATA_EXAMPLE_ENCODER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/chat_template.h"
#include "worker/data/tokenizer.h"

namespace rigtune::data {

inline constexpr int32_t kIgnoreLabel = -100;

struct EncodeOptions {
  bool train_on_prompt = false;
  int64_t context_length = 512;
};

struct EncodedExample {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length; kIgnoreLabel where not trained
  bool truncated = false;
  bool dropped_eos = false;
  int64_t trained_tokens() const;
};

// Tokenizes `rendered.text` (no post-processor tokens: templates and the
// rendered example carry their own BOS/EOS) and assigns labels. Fails only
// when the tokenizer fails or context_length < 2.
absl::StatusOr<EncodedExample> EncodeRendered(const Tokenizer& tokenizer,
                                              const RenderedExample& rendered,
                                              const EncodeOptions& options);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_EXAMPLE_ENCODER_H_
