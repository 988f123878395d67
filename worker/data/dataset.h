// Dataset files: JSON Lines (one object per line) or one JSON array of
// objects, in one of three formats:
//   alpaca    {"instruction": str, "input": str (optional), "output": str}
//             rendered with the Stanford Alpaca prompt; the output is the
//             completion, followed by EOS
//   messages  {"messages": [{"role": "system|user|assistant|tool", "content": str}],
//              "tools": [...] (optional JSON schemas, passed to the template)}
//             or ShareGPT {"conversations": [{"from": "system|human|gpt", "value": str}]},
//             rendered with the model's chat template (chat_template.h)
//   text      {"text": str}: plain completion, every token trained, then EOS
//
// Reading validates everything before training starts: a malformed line or a
// missing / mistyped field is an error naming the file and line (for JSON
// arrays, the element number), e.g. "data.jsonl:17: field \"output\" must be
// a string". Empty examples (no output, no text, no assistant content) are
// counted in `empty` and skipped. Example:
//
//   DatasetStats stats;
//   auto examples = ReadDataset("train.jsonl", DatasetFormat::kAlpaca, &stats);
#ifndef RIGTUNE_WORKER_DATA_DATASET_H_
#define RIGTUNE_WORKER_DATA_DATASET_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/chat_template.h"
#include "worker/data/tokenizer.h"

namespace rigtune::data {

enum class DatasetFormat { kAlpaca, kMessages, kText };

// "alpaca" | "messages" | "text"; anything else fails naming dataset.format.
absl::StatusOr<DatasetFormat> ParseDatasetFormat(std::string_view name);

struct Example {
  int64_t line = 0;               // 1-based line (.jsonl) or element (.json array)
  std::vector<Message> messages;  // messages format
  nlohmann::ordered_json tools;   // messages format: the record's "tools", or null
  std::string prompt;             // alpaca: the rendered instruction prompt
  std::string completion;         // alpaca: output; text: the text
};

struct DatasetStats {
  int64_t records = 0;  // objects read
  int64_t empty = 0;    // skipped: nothing to train on
};

// Reads and validates `path`. NotFound when the file cannot be read,
// InvalidArgument (with file:line) for malformed content.
absl::StatusOr<std::vector<Example>> ReadDataset(const std::string& path, DatasetFormat format,
                                                 DatasetStats* stats);

// Parses dataset text already in memory; `source` names it in errors.
absl::StatusOr<std::vector<Example>> ParseDataset(std::string_view contents,
                                                  std::string_view source, DatasetFormat format,
                                                  DatasetStats* stats);

// The text and completion spans of one example. `chat` is required for the
// messages format (fails naming the role on template errors).
absl::StatusOr<RenderedExample> RenderExample(const Example& example, DatasetFormat format,
                                              const Tokenizer& tokenizer, const ChatTemplate* chat);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_DATASET_H_
