#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_builder.h"
#include "worker/train/batch_source.h"

namespace rigtune::train {
namespace {

// Token ids drawn uniformly from a seed per (epoch, index): batch k of an
// epoch is the same whether or not the run was interrupted before it.
class SyntheticBatchSource : public BatchSource {
 public:
  SyntheticBatchSource(int64_t vocab, int64_t batch, int64_t seq, int64_t per_epoch,
                       int64_t epochs, uint64_t seed, int64_t rank, int64_t world)
      : vocab_(vocab), batch_(batch), seq_(seq), per_epoch_(per_epoch), epochs_(epochs),
        seed_(seed), rank_(rank), world_(world) {}

  absl::StatusOr<TrainBatch> Next(at::Device device) override {
    if (index_ >= per_epoch_) {
      ++epoch_;
      index_ = 0;
    }
    if (epoch_ >= epochs_) return absl::NotFoundError("end of synthetic data");
    at::Generator gen = at::globalContext().defaultGenerator(at::kCPU).clone();
    gen.set_current_seed(model::MixSeed(seed_, epoch_, index_, 7));
    ++index_;
    at::Tensor global = at::randint(vocab_, {batch_ * world_, seq_}, gen, at::kLong);
    at::Tensor ids = global.narrow(0, rank_ * batch_, batch_).contiguous().to(device);
    TrainBatch batch;
    batch.input_ids = ids;
    batch.labels = ids;
    return batch;
  }

  int64_t BatchesPerEpoch() const override { return per_epoch_; }
  int64_t epoch() const override { return epoch_; }

  std::string Position() const override {
    return nlohmann::json{{"epoch", epoch_}, {"index", index_}}.dump();
  }

  absl::Status Restore(const std::string& position) override {
    auto j = nlohmann::json::parse(position, nullptr, false);
    if (j.is_discarded() || !j.contains("epoch") || !j.contains("index")) {
      return absl::InvalidArgumentError("synthetic data position: expected {epoch, index}");
    }
    epoch_ = j["epoch"].get<int64_t>();
    index_ = j["index"].get<int64_t>();
    return absl::OkStatus();
  }

  std::string Summary() const override {
    return absl::StrCat("synthetic data: ", per_epoch_, " batches of ", batch_, " x ", seq_,
                        " random tokens per epoch");
  }

 private:
  int64_t vocab_, batch_, seq_, per_epoch_, epochs_;
  uint64_t seed_;
  int64_t rank_, world_;
  int64_t epoch_ = 0;
  int64_t index_ = 0;
};

}  // namespace

std::unique_ptr<BatchSource> MakeSyntheticBatchSource(int64_t vocab_size, int64_t batch_size,
                                                      int64_t seq_len, int64_t batches_per_epoch,
                                                      int64_t epochs, uint64_t seed,
                                                      int64_t rank, int64_t world_size) {
  return std::make_unique<SyntheticBatchSource>(vocab_size, batch_size, seq_len,
                                                batches_per_epoch, epochs, seed, rank, world_size);
}

}  // namespace rigtune::train
