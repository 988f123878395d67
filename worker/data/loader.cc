#include "worker/data/loader.h"

#include <cinttypes>
#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/data/shuffle_rng.h"
#include "worker/data/validation_split.h"

namespace rigtune::data {
namespace {

absl::Status CheckOptions(const LoaderOptions& o) {
  if (o.context_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.context_length: must be >= 2, got ", o.context_length));
  }
  if (o.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.batch_size: must be >= 1, got ", o.batch_size));
  }
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " is outside world_size ", o.world_size));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DataStats::ToString() const {
  return absl::StrCat("records=", records, " empty=", empty, " truncated=", truncated,
                      " dropped_eos=", dropped_eos, " dropped_overlong=", dropped_overlong,
                      " no_target=", no_target, " examples=", examples, " tokens=", tokens,
                      " target_tokens=", target_tokens, " rows=", rows,
                      " packing_efficiency=", packing_efficiency);
}

std::string LoaderPosition::ToJson() const {
  char state[17];
  std::snprintf(state, sizeof(state), "%016" PRIx64, rng_state);
  return nlohmann::json{{"epoch", epoch}, {"batch", batch}, {"rng_state", state}}.dump();
}

absl::StatusOr<LoaderPosition> LoaderPosition::FromJson(const std::string& json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("epoch") ||
      !j["epoch"].is_number_integer() || !j.contains("batch") || !j["batch"].is_number_integer() ||
      !j.contains("rng_state") || !j["rng_state"].is_string()) {
    return absl::InvalidArgumentError(
        "loader position: expected {\"epoch\": int, \"batch\": int, \"rng_state\": hex string}");
  }
  LoaderPosition p;
  p.epoch = j["epoch"].get<int64_t>();
  p.batch = j["batch"].get<int64_t>();
  if (p.epoch < 0 || p.batch < 0 ||
      !absl::SimpleHexAtoi(j["rng_state"].get<std::string>(), &p.rng_state)) {
    return absl::InvalidArgumentError("loader position: negative epoch/batch or bad rng_state");
  }
  return p;
}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Create(const LoaderOptions& options,
                                                               const Tokenizer& tokenizer) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  DatasetStats read_stats;
  absl::StatusOr<std::vector<Example>> examples =
      ReadDataset(options.dataset_path, options.format, &read_stats);
  if (!examples.ok()) return examples.status();
  if (options.validation_fraction > 0) {
    absl::StatusOr<SplitExamples> split =
        SplitForValidation(*std::move(examples), options.validation_fraction, options.seed);
    if (!split.ok()) return split.status();
    *examples = options.validation_part ? std::move(split->validation) : std::move(split->train);
  }
  std::unique_ptr<ChatTemplate> chat;
  if (options.format == DatasetFormat::kMessages) {
    absl::StatusOr<ChatTemplate> created = ChatTemplate::Create(tokenizer.config(), options.chat_template);
    if (!created.ok()) return created.status();
    chat = std::make_unique<ChatTemplate>(std::move(*created));
  }
  EncodeOptions encode{options.train_on_prompt, options.context_length};
  DataStats stats;
  stats.records = read_stats.records;
  stats.empty = read_stats.empty;
  std::vector<EncodedExample> encoded;
  encoded.reserve(examples->size());
  for (const Example& example : *examples) {
    absl::StatusOr<RenderedExample> rendered =
        RenderExample(example, options.format, tokenizer, chat.get());
    if (!rendered.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.dataset_path, ":", example.line, ": ", rendered.status().message()));
    }
    absl::StatusOr<EncodedExample> ex = EncodeRendered(tokenizer, *rendered, encode);
    if (!ex.ok()) return ex.status();
    if (ex->truncated) {
      if (options.drop_overlong) {
        ++stats.dropped_overlong;
        continue;
      }
      ++stats.truncated;
      stats.dropped_eos += ex->dropped_eos;
    }
    if (ex->trained_tokens() == 0) {
      ++stats.no_target;
      continue;
    }
    encoded.push_back(std::move(*ex));
  }
  absl::StatusOr<std::unique_ptr<DataLoader>> loader =
      FromEncoded(std::move(encoded), options, tokenizer.pad_id());
  if (!loader.ok()) {
    return absl::Status(loader.status().code(),
                        absl::StrCat(options.dataset_path, ": ", loader.status().message(), " (",
                                     stats.ToString(), ")"));
  }
  DataStats& merged = (*loader)->stats_;
  const DataStats counted = merged;
  merged = stats;
  merged.examples = counted.examples;
  merged.tokens = counted.tokens;
  merged.target_tokens = counted.target_tokens;
  merged.rows = counted.rows;
  merged.packing_efficiency = counted.packing_efficiency;
  return loader;
}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::FromEncoded(
    std::vector<EncodedExample> examples, const LoaderOptions& options, int32_t pad_id) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  for (const EncodedExample& ex : examples) {
    if (static_cast<int64_t>(ex.input_ids.size()) > options.context_length) {
      return absl::InvalidArgumentError("an encoded example is longer than context_length");
    }
  }
  std::unique_ptr<DataLoader> loader(new DataLoader(options, std::move(examples), pad_id));
  if (loader->batches_per_epoch() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dataset too small: ", loader->rows_.size(), " rows cannot fill one global batch of ",
        options.world_size * options.batch_size, " rows (world_size * batch_size)"));
  }
  return loader;
}

DataLoader::DataLoader(LoaderOptions options, std::vector<EncodedExample> examples, int32_t pad_id)
    : options_(std::move(options)), examples_(std::move(examples)), pad_id_(pad_id) {
  position_.rng_state = options_.seed;
  BuildEpoch();
  stats_.examples = static_cast<int64_t>(examples_.size());
  for (const EncodedExample& ex : examples_) {
    stats_.tokens += static_cast<int64_t>(ex.input_ids.size());
    stats_.target_tokens += ex.trained_tokens();
  }
  stats_.rows = static_cast<int64_t>(rows_.size());
  if (!rows_.empty()) {
    stats_.packing_efficiency = static_cast<double>(stats_.tokens) /
                                static_cast<double>(stats_.rows * options_.context_length);
  }
}

void DataLoader::BuildEpoch() {
  std::vector<int64_t> order(examples_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  ShuffleRng rng(position_.rng_state);
  rng.Shuffle(&order);
  next_epoch_state_ = rng.state();
  std::vector<const EncodedExample*> ordered;
  ordered.reserve(order.size());
  for (int64_t i : order) ordered.push_back(&examples_[i]);
  rows_ =
      options_.packing ? PackExamples(ordered, options_.context_length) : OneExamplePerRow(ordered);
}

int64_t DataLoader::batches_per_epoch() const {
  return static_cast<int64_t>(rows_.size()) / (options_.world_size * options_.batch_size);
}

absl::StatusOr<Batch> DataLoader::Next() {
  if (options_.epochs > 0 && position_.epoch >= options_.epochs) {
    return absl::NotFoundError(absl::StrCat("end of data after ", options_.epochs, " epochs"));
  }
  if (position_.batch >= batches_per_epoch()) {
    position_ = {position_.epoch + 1, 0, next_epoch_state_};
    if (options_.epochs > 0 && position_.epoch >= options_.epochs) {
      return absl::NotFoundError(absl::StrCat("end of data after ", options_.epochs, " epochs"));
    }
    BuildEpoch();
  }
  const int64_t first =
      (position_.batch * options_.world_size + options_.rank) * options_.batch_size;
  std::vector<const PackedRow*> rows;
  for (int64_t r = 0; r < options_.batch_size; ++r) rows.push_back(&rows_[first + r]);
  ++position_.batch;
  return MakeBatch(rows, pad_id_);
}

absl::Status DataLoader::Restore(const LoaderPosition& position) {
  position_ = position;
  BuildEpoch();
  if (position_.batch > batches_per_epoch()) {
    return absl::InvalidArgumentError(
        absl::StrCat("loader position: batch ", position_.batch, " is past this epoch's ",
                     batches_per_epoch(), " batches; was the dataset or batch size changed?"));
  }
  return absl::OkStatus();
}

}  // namespace rigtune::data
