// DatasetBatchSource: worker/data's loader behind the engine's BatchSource.
#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/data/loader.h"
#include "worker/data/tokenizer.h"
#include "worker/model/config.h"
#include "worker/train/batch_source.h"

namespace rigtune::train {
namespace {

at::Tensor ToTensor(const std::vector<int32_t>& v, int64_t rows, int64_t cols) {
  return at::tensor(v, at::kInt).view({rows, cols}).to(at::kLong);
}

// Note [Packed attention mask]
// Rows with several examples, or with padding, get an explicit boolean mask:
// token i may attend to token j when both belong to the same example and
// j <= i (block-diagonal causal). A padding position attends only to itself,
// so no row of the softmax is empty (which would give NaN); its label is
// -100 and nobody attends to it, so it changes nothing else. Rows that are
// one unpadded example keep the plain causal path (no mask: flash attention
// on CUDA).
bool NeedsMask(const data::Batch& b) {
  bool needed = false;
  for (int64_t i = 0; i < b.rows && !needed; ++i) needed = b.cu_seqlens[i].size() > 2;
  for (int32_t m : b.attention_mask) needed |= m == 0;
  return needed;
}

at::Tensor AttentionMask(const data::Batch& b) {
  at::Tensor seg = ToTensor(b.segment_ids, b.rows, b.seq_len);
  at::Tensor same = seg.unsqueeze(2) == seg.unsqueeze(1);                // [B, T, T]
  at::Tensor causal = at::ones({b.seq_len, b.seq_len}, at::kBool).tril();
  at::Tensor real = (seg >= 0).unsqueeze(2);
  at::Tensor eye = at::eye(b.seq_len, at::kBool);
  return (same.logical_and(causal).logical_and(real)).logical_or(eye).unsqueeze(1);
}

// The same boundaries for variable-length attention: every row's examples
// (data's per-row cu_seqlens) shifted to the row's place in the flattened
// batch; a row's padding tail becomes one more segment of its own.
std::pair<at::Tensor, int64_t> FlatSeqlens(const data::Batch& b) {
  std::vector<int32_t> cu{0};
  int64_t longest = 0;
  for (int64_t r = 0; r < b.rows; ++r) {
    const int64_t base = r * b.seq_len;
    const std::vector<int32_t>& row = b.cu_seqlens[r];
    for (size_t i = 1; i < row.size(); ++i) {
      cu.push_back(static_cast<int32_t>(base + row[i]));
      longest = std::max<int64_t>(longest, row[i] - row[i - 1]);
    }
    if (row.back() < b.seq_len) {
      cu.push_back(static_cast<int32_t>(base + b.seq_len));
      longest = std::max<int64_t>(longest, b.seq_len - row.back());
    }
  }
  return {at::tensor(cu, at::kInt), longest};
}

}  // namespace

TrainBatch ToTrainBatch(const data::Batch& b, at::Device device) {
  TrainBatch t;
  t.input_ids = ToTensor(b.input_ids, b.rows, b.seq_len).to(device);
  t.labels = ToTensor(b.labels, b.rows, b.seq_len).to(device);
  t.position_ids = ToTensor(b.position_ids, b.rows, b.seq_len).to(device);
  if (NeedsMask(b)) {
    // The dense mask is T² bytes per row (6.7 GB at 81,920 tokens). On a GPU
    // the boundaries suffice: variable-length attention needs no mask, and
    // where it does not apply (float32) Trainer::Attention builds one.
    if (!device.is_cuda()) t.attention_mask = AttentionMask(b).to(device);
    auto [cu, longest] = FlatSeqlens(b);
    t.cu_seqlens = cu.to(device);
    t.max_seqlen = longest;
  }
  return t;
}

namespace {

class DatasetBatchSource : public BatchSource {
 public:
  DatasetBatchSource(std::unique_ptr<data::Tokenizer> tokenizer,
                     std::unique_ptr<data::DataLoader> loader)
      : tokenizer_(std::move(tokenizer)), loader_(std::move(loader)) {}

  absl::StatusOr<TrainBatch> Next(at::Device device) override {
    auto b = loader_->Next();
    if (!b.ok()) return b.status();
    return ToTrainBatch(*b, device);
  }

  int64_t BatchesPerEpoch() const override { return loader_->batches_per_epoch(); }
  int64_t epoch() const override { return loader_->epoch(); }
  std::string Position() const override { return loader_->position().ToJson(); }
  absl::Status Restore(const std::string& position) override {
    auto p = data::LoaderPosition::FromJson(position);
    if (!p.ok()) return p.status();
    return loader_->Restore(*p);
  }
  std::string Summary() const override { return loader_->stats().ToString(); }

 private:
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::unique_ptr<data::DataLoader> loader_;
};

absl::StatusOr<std::unique_ptr<data::Tokenizer>> LoadTokenizer(const std::string& model_dir,
                                                               const std::string& field) {
  if (model::IsRandomSource(model_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": a random: model has no tokenizer; leave ", field, " empty for "
        "synthetic tokens, or give a model folder with tokenizer.json"));
  }
  return data::Tokenizer::Load(model_dir);
}

// The training loader's options for `config` (rank 0 of 1).
absl::StatusOr<data::LoaderOptions> LoaderOptionsFor(const JobConfig& config) {
  auto format = data::ParseDatasetFormat(config.dataset.format);
  if (!format.ok()) return format.status();
  data::LoaderOptions o;
  o.dataset_path = config.dataset.path;
  o.format = *format;
  o.train_on_prompt = config.dataset.train_on_prompt;
  o.packing = config.dataset.packing;
  o.chat_template.template_text = config.dataset.chat_template;
  if (!config.dataset.chat_template_kwargs.empty()) {
    o.chat_template.variables = nlohmann::ordered_json::parse(config.dataset.chat_template_kwargs);
  }
  o.context_length = config.train.context_length;
  o.batch_size = config.train.batch_size;
  o.seed = config.train.seed;
  o.epochs = config.train.epochs;
  o.validation_fraction = config.dataset.validation_fraction;
  return o;
}

}  // namespace

absl::StatusOr<ValidationData> MakeValidationData(const JobConfig& config,
                                                  const std::string& model_dir, int64_t rank,
                                                  int64_t world_size) {
  const bool held_out = config.dataset.validation_path.empty();
  const std::string field = held_out ? "dataset.validation_fraction" : "dataset.validation_path";
  auto tokenizer = LoadTokenizer(model_dir, field);
  if (!tokenizer.ok()) return tokenizer.status();
  auto o = LoaderOptionsFor(config);
  if (!o.ok()) return o.status();
  // Every row once, in a fixed order: one rank, one row per batch, one epoch.
  o->batch_size = 1;
  o->epochs = 1;
  o->validation_part = held_out;
  if (!held_out) {
    o->dataset_path = config.dataset.validation_path;
    o->validation_fraction = 0;
  }
  auto loader = data::DataLoader::Create(*o, **tokenizer);
  if (!loader.ok()) {
    return absl::Status(loader.status().code(),
                        absl::StrCat(field, ": ", loader.status().message()));
  }
  const std::vector<data::PackedRow>& rows = (*loader)->rows();
  const int64_t total = static_cast<int64_t>(rows.size());
  const int64_t per_rank = config.train.batch_size;
  const int64_t global = per_rank * world_size;
  ValidationData out;
  out.pad_id = (*loader)->pad_id();
  out.summary = absl::StrCat("validation: ", (*loader)->stats().ToString());
  // Global batch g holds rows [g * global, (g + 1) * global); rank r takes
  // its batch_size slice, as in training, but the last, partial global
  // batch is kept: every row is evaluated exactly once.
  for (int64_t first = 0; first < total; first += global) {
    const int64_t begin = std::min(total, first + rank * per_rank);
    const int64_t end = std::min(total, begin + per_rank);
    std::vector<const data::PackedRow*> mine;
    for (int64_t i = begin; i < end; ++i) mine.push_back(&rows[i]);
    out.batches.push_back(mine.empty() ? data::Batch{} : data::MakeBatch(mine, out.pad_id));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<BatchSource>> MakeDatasetBatchSource(const JobConfig& config,
                                                                    const std::string& model_dir,
                                                                    int64_t rank,
                                                                    int64_t world_size) {
  auto tokenizer = LoadTokenizer(model_dir, "dataset.path");
  if (!tokenizer.ok()) return tokenizer.status();
  auto o = LoaderOptionsFor(config);
  if (!o.ok()) return o.status();
  o->rank = rank;
  o->world_size = world_size;
  auto loader = data::DataLoader::Create(*o, **tokenizer);
  if (!loader.ok()) return loader.status();
  return std::unique_ptr<BatchSource>(
      std::make_unique<DatasetBatchSource>(*std::move(tokenizer), *std::move(loader)));
}

}  // namespace rigtune::train
