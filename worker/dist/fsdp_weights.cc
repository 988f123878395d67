// FsdpLayers, the trained-weights part: units whose weights train
// themselves (train.method full, llama_pro's inserted blocks), sharded.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/dist/fsdp.h"

namespace rigtune::dist {

namespace {

// INVALID_ARGUMENT naming `caller` unless there is one moment shard of each
// kind per trained unit.
absl::Status CheckMomentShards(const char* caller, size_t units,
                               const std::vector<at::Tensor>& exp_avg,
                               const std::vector<at::Tensor>& exp_avg_sq) {
  if (exp_avg.size() == units && exp_avg_sq.size() == units) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(caller, ": expected ", units,
                                                 " moment shards (one per trained unit), got ",
                                                 exp_avg.size(), " and ", exp_avg_sq.size()));
}

}  // namespace

// Note [Sharded weights]
// ~~~~~~~~~~~~~~~~~~~~~~
// A unit that trains its weights is laid out densely: every tensor (a
// layer's projection weights and biases and its norms; the embedding table;
// the final norm and untied LM head) sits whole, in the compute dtype, at a
// 16-byte aligned offset of the unit's buffer, padded to 16 x shards bytes.
// So the buffer is also a flat array of the compute dtype, and so is each
// rank's shard of it: the same bytes FsdpLayers shards for frozen units are
// here the compute-dtype parameters, and each rank keeps beside its shard a
// float32 master and a float32 gradient of the same element count (AdamW's
// two moments follow the masters). A unit's step:
//
//   forward   all-gather the compute-dtype shards, view the tensors out of
//             the full buffer as autograd leaves, compute, free (as for
//             frozen bytes; shard_grad_op keeps it until backward);
//   backward  re-gather, recompute, backpropagate; the leaves' gradients,
//             widened to float32 in their element positions, are
//             reduce-scattered (all-reduced under no_shard, then all-reduced
//             across nodes under hybrid), and each rank adds its shard to
//             its gradient shard; free;
//   update    AdamW updates the local float32 masters from the local
//             gradient shards (global-norm clipping sums the squared shards
//             over the ranks); each master is rounded into the
//             compute-dtype shard, which is what the next all-gather
//             distributes. In fp32 the shard is its own master.
//
// The padding elements are zero, receive zero gradients and stay zero.
// Gradients are reduced in float32 (twice the bytes of a bf16 reduction,
// but summed over ranks without rounding to 8 bits of mantissa), which keeps
// any number of ranks training what one process trains (FullModelLayers).
// The embedding unit's gradient has two sources when the head is tied (the
// loss through the LM head, and the lookup's backward): each visit
// reduce-scatters what it produced, and the shards add up.

// Note [Offloaded trained weights]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// With dist.cpu_offload a trained unit's compute-dtype shard is kept in
// pinned host memory like a frozen shard, and streamed the same way (copied
// up on the copy stream one unit ahead, then all-gathered: Note [Streaming
// layers]). Its float32 master, gradient and AdamW moments then live in host
// memory too (cpu_offload implies offload_optimizer here, as FSDP's
// CPUOffload(offload_params=True) keeps parameters, gradients and the
// optimizer step on the CPU); offload_optimizer alone moves only those, the
// shard stays on the device. The step changes in two places:
//
//   backward  the reduced float32 gradient shard is copied down into a
//             pinned staging buffer behind the backward and added to the
//             host gradient one unit later (StageGradients), as LoRA's are;
//   update    the global norm is taken over the host gradients, then
//             HostOptimizerStep runs AdamW::Update unit by unit (embedding,
//             layers, head) on its own thread, overlapping the next
//             forward; every unit is marked stale, and its next gather
//             (StartStreamedGather, StartEdgeGather) waits for that unit's
//             update and rounds its master into the shard (PublishUnit)
//             before copying it up. In fp32 with cpu_offload the host shard
//             is its own master; with offload_optimizer alone the master is
//             a host tensor of its own, copied into the device shard.
//
// The arithmetic is AdamW::Update in float32 on the same values as the
// device step, so an offloaded run trains what a device run trains, and
// the checkpoint (gathered masters and moments by name) is the same.

std::vector<at::Tensor> FsdpLayers::Parameters() {
  if (adapters_) return lora_shards_;
  std::vector<at::Tensor> masters;
  for (const TrainedUnit& t : trained_) masters.push_back(t.master);
  return masters;
}

at::Tensor& FsdpLayers::UnitShard(int64_t unit) {
  const int64_t n = static_cast<int64_t>(layouts_.size());
  return unit < n ? frozen_shards_[unit] : edges_[unit - n].shard;
}

std::vector<std::pair<std::string, Segment>> FsdpLayers::UnitTensors(int64_t unit) const {
  const int64_t n = static_cast<int64_t>(layouts_.size());
  if (unit < n) return layouts_[unit].NamedSegments(unit);
  const std::vector<Segment>& s = edges_[unit - n].layout.segments;
  if (unit - n == kEmbedding) return {{"model.embed_tokens.weight", s.at(0)}};
  std::vector<std::pair<std::string, Segment>> out = {{"model.norm.weight", s.at(0)}};
  if (!tied_) out.emplace_back("lm_head.weight", s.at(1));
  return out;
}

absl::Status FsdpLayers::MakeTrainedUnits(const TrainedWeights& trained) {
  const int64_t n = static_cast<int64_t>(layouts_.size());
  trained_index_.assign(n + 2, -1);
  first_trained_layer_ = 0;
  if (!trained.any()) return absl::OkStatus();
  if (adapters_) {
    return absl::InvalidArgumentError(
        "units that train their weights carry no adapters: build the model without LoRA "
        "(BuildOptions::lora.enabled false)");
  }
  std::vector<int64_t> units;
  if (trained.embedding_and_head) units.push_back(EdgeUnitId(kEmbedding));
  units.insert(units.end(), trained.layers.begin(), trained.layers.end());
  if (trained.embedding_and_head) units.push_back(EdgeUnitId(kHead));
  first_trained_layer_ = trained.embedding_and_head ? 0
                         : trained.layers.empty()   ? n
                                                    : trained.layers.front();
  c10::NoGradGuard no_grad;
  for (int64_t u : units) {
    const auto named = UnitTensors(u);
    const at::ScalarType dtype = named.at(0).second.dtype;
    for (const auto& [name, segment] : named) {
      if (segment.dtype != dtype) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " is ", c10::toString(segment.dtype), " but ", named.at(0).first, " is ",
            c10::toString(dtype), "; a trained unit's tensors share the compute dtype"));
      }
    }
    at::Tensor values = UnitShard(u).view(dtype);
    // The master shares the shard's storage in fp32 when both live on the
    // same side (Note [Offloaded trained weights]).
    const bool host = host_optimizer();
    TrainedUnit t{u, dtype, values, at::Tensor()};
    t.own_master = dtype != at::kFloat || host != options_.cpu_offload;
    if (t.own_master) {
      t.master = host ? copies_.HostEmpty(values.numel(), at::kFloat).copy_(values)
                      : values.to(at::kFloat);
    }
    t.grad = host ? at::zeros({t.master.numel()}, at::kFloat) : at::zeros_like(t.master);
    trained_index_[u] = static_cast<int64_t>(trained_.size());
    trained_.push_back(std::move(t));
  }
  return absl::OkStatus();
}

void FsdpLayers::ReduceEdge(Edge e) {
  c10::NoGradGuard no_grad;
  EdgeUnit& unit = edges_[e];
  AddTrainedGradient(EdgeUnitId(e), ReduceGradient(unit.layout.FlattenGradients(unit.views)));
}

void FsdpLayers::AddTrainedGradient(int64_t unit, const at::Tensor& shard) {
  TrainedUnit& t = Trained(unit);
  if (host_optimizer()) {
    StageGradients(t.grad, shard);
  } else {
    t.grad.add_(shard);
  }
}

void FsdpLayers::DropGathered(int64_t unit) {
  // A copy gathered before the update (the last layer kept by an
  // evaluation's forward) holds the old weights.
  const int64_t n = static_cast<int64_t>(layouts_.size());
  if (unit < n) {
    auto it = gathered_.find(unit);
    if (it == gathered_.end()) return;
    if (auto s = it->second->frozen_pending.Wait(); !s.ok()) Fail(s);
    if (streamed()) free_slots_.push_back(std::move(it->second->slot));
    gathered_.erase(it);
  } else {
    EdgeUnit& edge = edges_[unit - n];
    if (auto s = edge.pending.Wait(); !s.ok()) Fail(s);
    edge.full = at::Tensor();
    edge.views.clear();
  }
}

void FsdpLayers::PublishUnit(int64_t unit) {
  if (!TrainsUnit(unit)) return;
  TrainedUnit& t = Trained(unit);
  if (!t.stale) return;
  host_step_.WaitFor(static_cast<size_t>(trained_index_[unit]));
  c10::NoGradGuard no_grad;
  if (t.own_master) UnitShard(unit).view(t.dtype).copy_(t.master);
  t.stale = false;
}

void FsdpLayers::PublishTrainedWeights() {
  for (TrainedUnit& t : trained_) {
    DropGathered(t.unit);
    t.stale = true;
    PublishUnit(t.unit);
  }
}

absl::StatusOr<std::map<std::string, at::Tensor>> FsdpLayers::GatherWeightState(
    const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq) {
  c10::NoGradGuard no_grad;
  WaitForUpdate();
  if (auto s = CheckMomentShards("GatherTrainableState", trained_.size(), exp_avg, exp_avg_sq);
      !s.ok()) {
    return s;
  }
  std::map<std::string, at::Tensor> out;
  for (size_t k = 0; k < trained_.size(); ++k) {
    const TrainedUnit& t = trained_[k];
    const int64_t element = static_cast<int64_t>(c10::elementSize(t.dtype));
    const auto named = UnitTensors(t.unit);
    const std::array<std::pair<const at::Tensor*, const char*>, 3> parts = {
        {{&t.master, ""}, {&exp_avg[k], kExpAvgSuffix}, {&exp_avg_sq[k], kExpAvgSqSuffix}}};
    for (const auto& [shard, suffix] : parts) {
      auto full = GatherFull(*shard);
      if (!full.ok()) return full.status();
      for (const auto& [name, s] : named) {
        out[name + suffix] =
            full->narrow(0, s.offset / element, s.bytes / element).view(s.shape).clone();
      }
    }
  }
  return out;
}

absl::Status FsdpLayers::LoadWeightState(const std::map<std::string, at::Tensor>& state,
                                         std::vector<at::Tensor>& exp_avg,
                                         std::vector<at::Tensor>& exp_avg_sq) {
  c10::NoGradGuard no_grad;
  WaitForUpdate();
  if (auto s = CheckMomentShards("LoadTrainableState", trained_.size(), exp_avg, exp_avg_sq);
      !s.ok()) {
    return s;
  }
  const int64_t part = shard_index();
  const int64_t n = static_cast<int64_t>(layouts_.size());
  for (size_t k = 0; k < trained_.size(); ++k) {
    TrainedUnit& t = trained_[k];
    const int64_t element = static_cast<int64_t>(c10::elementSize(t.dtype));
    const int64_t bytes =
        t.unit < n ? layouts_[t.unit].frozen_bytes : edges_[t.unit - n].layout.bytes;
    const auto named = UnitTensors(t.unit);
    const std::array<std::pair<at::Tensor*, const char*>, 3> parts = {
        {{&t.master, ""}, {&exp_avg[k], kExpAvgSuffix}, {&exp_avg_sq[k], kExpAvgSqSuffix}}};
    for (const auto& [shard, suffix] : parts) {
      // The full flat buffer (padding stays zero), then this rank's slice.
      at::Tensor full = at::zeros({bytes / element}, at::kFloat);
      for (const auto& [name, s] : named) {
        const std::string key = name + suffix;
        auto it = state.find(key);
        if (it == state.end()) {
          return absl::NotFoundError(absl::StrCat(
              key, ": missing (was the checkpoint written by another train.method or model?)"));
        }
        if (it->second.sizes() != at::IntArrayRef(s.shape)) {
          return absl::InvalidArgumentError(
              absl::StrCat(key, " has shape ", c10::str(it->second.sizes()), ", the model expects ",
                           c10::str(at::IntArrayRef(s.shape))));
        }
        full.narrow(0, s.offset / element, s.bytes / element).copy_(it->second.reshape({-1}));
      }
      const int64_t len = shard->numel();
      shard->copy_(full.narrow(0, part * len, len));
    }
  }
  PublishTrainedWeights();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<train::NamedTensor>> FsdpLayers::GatherTrainedWeights() {
  c10::NoGradGuard no_grad;
  std::vector<train::NamedTensor> out;
  for (const TrainedUnit& t : trained_) {
    PublishUnit(t.unit);
    auto full = GatherFull(UnitShard(t.unit));
    if (!full.ok()) return full.status();
    for (const auto& [name, s] : UnitTensors(t.unit)) {
      out.push_back({name, full->narrow(0, s.offset, s.bytes).view(s.dtype).view(s.shape).clone()});
    }
  }
  return out;
}

}  // namespace rigtune::dist
