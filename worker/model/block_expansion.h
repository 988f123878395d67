// Block expansion (train.method llama_pro, after the LLaMA Pro paper): a copy
// of every k-th decoder block is inserted right after it, and only the
// copies train. Each copy starts with its attention output projection
// (o_proj) and its MLP output projection (down_proj), with their biases,
// zeroed, so both halves of the block add exactly 0 to the residual stream:
// the expanded model computes what the original did until training moves
// the copies.
//
// The original blocks keep the job's base format (nf4, hqq4 or bf16) and
// stay frozen; the copies are dense in the compute dtype (they train).
//
//   ExpansionPlan plan = PlanBlockExpansion(32, 4);  // 40 layers, copies at 4, 9, ...
//   ASSIGN_OR_RETURN(LlamaModel m, BuildExpandedModel(*source, *dense_source, plan));
#ifndef RIGTUNE_WORKER_MODEL_BLOCK_EXPANSION_H_
#define RIGTUNE_WORKER_MODEL_BLOCK_EXPANSION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/llama.h"
#include "worker/model/model_builder.h"

namespace rigtune::model {

// Where each layer of the expanded model comes from.
struct ExpansionPlan {
  std::vector<int64_t> source;  // original layer index of expanded layer j
  std::vector<bool> inserted;   // expanded layer j is a copy (trains)
  int64_t size() const { return static_cast<int64_t>(source.size()); }
  // The expanded indices of the copies, ascending.
  std::vector<int64_t> InsertedLayers() const;
};

// `num_layers` original layers with a copy after every `every`-th one
// (after layers every-1, 2·every-1, ...): num_layers + num_layers / every
// layers. INVALID_ARGUMENT naming train.expand_every unless
// 1 <= every <= num_layers.
absl::StatusOr<ExpansionPlan> PlanBlockExpansion(int64_t num_layers, int64_t every);

// The expanded model: shell and original layers from `source`, copies read
// from `dense_source` (the same model opened with a dense base in the
// compute dtype and no adapters) with o_proj and down_proj zeroed.
// config.num_layers becomes plan.size(). Models whose layers differ in kind
// (layer_types: sliding and full attention mixed) are refused: a copy would
// change the pattern the config describes.
absl::StatusOr<LlamaModel> BuildExpandedModel(ModelSource& source, ModelSource& dense_source,
                                              const ExpansionPlan& plan);

// The same expanded model as a source of layers (FSDP loads it one layer at
// a time): config().num_layers is plan.size(), LoadShell() is `source`'s
// with that many (empty) layers, and LoadLayer(j) is original layer
// plan.source[j] from `source`, or for a copy the dense layer from
// `dense_source` with o_proj and down_proj zeroed. Both sources must
// outlive it. Refuses what BuildExpandedModel refuses.
absl::StatusOr<std::unique_ptr<ModelSource>> ExpandedModelSource(ModelSource& source,
                                                                ModelSource& dense_source,
                                                                const ExpansionPlan& plan);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_BLOCK_EXPANSION_H_
