#include "worker/data/example_encoder.h"

#include "absl/strings/str_cat.h"

namespace rigtune::data {

int64_t EncodedExample::trained_tokens() const {
  int64_t n = 0;
  for (int32_t label : labels) n += label != kIgnoreLabel;
  return n;
}

absl::StatusOr<EncodedExample> EncodeRendered(const Tokenizer& tokenizer,
                                              const RenderedExample& rendered,
                                              const EncodeOptions& options) {
  if (options.context_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length must be >= 2, got ", options.context_length));
  }
  absl::StatusOr<Tokenizer::Encoding> enc = tokenizer.EncodeWithOffsets(rendered.text, false);
  if (!enc.ok()) return enc.status();
  EncodedExample out;
  if (rendered.add_bos && tokenizer.bos_id() >= 0) {
    out.input_ids.push_back(tokenizer.bos_id());
    out.labels.push_back(kIgnoreLabel);
  }
  size_t span = 0;
  const auto& spans = rendered.completion_spans;
  for (size_t k = 0; k < enc->ids.size(); ++k) {
    const auto start = static_cast<size_t>(enc->starts[k] < 0 ? 0 : enc->starts[k]);
    while (span < spans.size() && spans[span].second <= start) ++span;
    const bool target =
        options.train_on_prompt ||
        (span < spans.size() && spans[span].first <= start && start < spans[span].second);
    out.input_ids.push_back(enc->ids[k]);
    out.labels.push_back(target ? enc->ids[k] : kIgnoreLabel);
  }
  if (rendered.add_eos && tokenizer.eos_id() >= 0) {
    out.input_ids.push_back(tokenizer.eos_id());
    out.labels.push_back(tokenizer.eos_id());
  }
  if (!out.labels.empty()) out.labels[0] = kIgnoreLabel;  // Note [Labels and the shift]
  if (static_cast<int64_t>(out.input_ids.size()) > options.context_length) {
    const int32_t last = out.input_ids.back();
    out.truncated = true;
    out.dropped_eos = last == tokenizer.eos_id() || tokenizer.IsSpecial(last);
    out.input_ids.resize(options.context_length);
    out.labels.resize(options.context_length);
  }
  return out;
}

}  // namespace rigtune::data
