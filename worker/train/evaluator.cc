#include "worker/train/evaluator.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

namespace rigtune::train {
namespace {

// A micro-batch that trains nothing: keeps a rank without validation rows in
// step with the others' collectives (every layer is still gathered).
TrainBatch EmptyBatch(int32_t pad_id, at::Device device) {
  const auto ids = at::dtype(at::kLong).device(device);
  TrainBatch t;
  t.input_ids = at::full({1, 2}, static_cast<int64_t>(pad_id), ids);
  t.labels = at::full({1, 2}, static_cast<int64_t>(-100), ids);
  return t;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Create(const JobConfig& config, int64_t rank,
                                                            int64_t world_size) {
  auto data = MakeValidationData(config, config.model, rank, world_size);
  if (!data.ok()) return data.status();
  return std::unique_ptr<Evaluator>(
      new Evaluator(config.train.eval_every_steps, *std::move(data)));
}

bool Evaluator::Due(int64_t step, int64_t total_steps) const {
  if (step <= 0) return false;
  return step >= total_steps || (every_steps_ > 0 && step % every_steps_ == 0);
}

ValidationMetrics Evaluator::Evaluate(Trainer& trainer, at::Device device, int64_t step) {
  double loss_sum = 0, tokens = 0;
  for (const data::Batch& batch : data_.batches) {
    auto [sum, count] = trainer.LossSum(batch.rows == 0 ? EmptyBatch(data_.pad_id, device)
                                                        : ToTrainBatch(batch, device));
    loss_sum += sum;
    tokens += static_cast<double>(count);
  }
  ValidationMetrics r;
  r.step = step;
  loss_sum = trainer.SumOverRanks(loss_sum);
  r.tokens = static_cast<int64_t>(trainer.SumOverRanks(tokens));
  r.loss = r.tokens > 0 ? loss_sum / static_cast<double>(r.tokens) : 0;
  r.perplexity = std::exp(r.loss);
  return r;
}

bool ValidationTracker::Record(const ValidationMetrics& v) {
  if (v.loss < best) {
    best = v.loss;
    best_step = v.step;
    evals_since_best = 0;
    return true;
  }
  ++evals_since_best;
  return false;
}

}  // namespace rigtune::train
