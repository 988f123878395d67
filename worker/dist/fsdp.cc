#include "worker/dist/fsdp.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <array>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/train/adapter_export.h"

namespace rigtune::dist {
namespace {

std::array<lora::LoraSpec, model::kNumProj> Specs(const model::LoraOptions& lora, bool fused) {
  std::array<lora::LoraSpec, model::kNumProj> specs;
  for (int p = 0; p < model::kNumProj; ++p) specs[p] = model::LoraSpecFor(lora, p, fused);
  return specs;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FsdpLayers>> FsdpLayers::Create(model::ModelSource& source,
                                                               model::LlamaModel& shell,
                                                               const model::BuildOptions& build,
                                                               Communicator* comm,
                                                               const FsdpOptions& options,
                                                               const TrainedWeights& trained) {
  const DistEnv env = comm ? comm->env() : DistEnv{};
  const bool hybrid = options.sharding == "hybrid" && env.num_nodes() > 1;
  const int64_t shards = options.sharding == "no_shard" ? 1
                         : hybrid                       ? env.local_world_size
                                                        : env.world_size;
  std::unique_ptr<FsdpLayers> f(new FsdpLayers(comm, options, shards, build.device));
  if (hybrid) {
    const int64_t per_node = env.local_world_size, node = env.rank / per_node;
    std::vector<int64_t> same_node, same_local;
    for (int64_t r = 0; r < per_node; ++r) same_node.push_back(node * per_node + r);
    for (int64_t k = 0; k < env.num_nodes(); ++k) same_local.push_back(k * per_node + env.rank % per_node);
    auto shard_group = comm->Subgroup(absl::StrCat("node", node), same_node);
    if (!shard_group.ok()) return shard_group.status();
    auto replica_group = comm->Subgroup(absl::StrCat("replica", env.rank % per_node), same_local);
    if (!replica_group.ok()) return replica_group.status();
    f->shard_group_ = *std::move(shard_group);
    f->replica_group_ = *std::move(replica_group);
  }
  const model::ModelConfig& config = source.config();
  const int64_t n = config.num_layers, rank = env.rank, world = env.world_size;
  c10::NoGradGuard no_grad;
  const auto dev = at::TensorOptions().device(build.device);

  // The embedding and head first: every rank loaded them whole with the
  // shell; keeping only a slice frees the rest before any layer arrives.
  f->tied_ = config.tie_word_embeddings;
  f->ShardEdge(kEmbedding, {shell.embed_tokens});
  f->ShardEdge(kHead, f->tied_ ? std::vector<at::Tensor>{shell.norm}
                               : std::vector<at::Tensor>{shell.norm, shell.lm_head});
  shell.embed_tokens = shell.lm_head = shell.norm = at::Tensor();

  // Whether absmax is double-quantized: rigtune's quantizer always does it;
  // a bnb-4bit checkpoint says. Rank 0 (which builds layer 0) decides.
  model::DecoderLayer first;
  at::Tensor nested = at::zeros({1}, dev.dtype(at::kInt));
  if (rank == 0) {
    auto layer = source.LoadLayer(0);
    if (!layer.ok()) return layer.status();
    first = *std::move(layer);
    nested.fill_(first.proj[0].weight().double_quant() ? 1 : 0);
  }
  if (world > 1) {
    if (auto s = comm->Broadcast(nested, 0); !s.ok()) return s;
  }
  const auto specs = Specs(build.lora, config.fused_projections);
  const LayerLayout base = LayerLayout::ForConfig(config, specs, build.dtype,
                                                  nested.item<int>() != 0, shards, build.base);
  // A layer that trains its weights is dense in the compute dtype.
  const LayerLayout dense = LayerLayout::ForConfig(config, specs, build.dtype, false, shards,
                                                   quant::BaseFormat::kBf16);
  f->adapters_ = false;
  for (const LinearLayout& lin : base.linears) f->adapters_ = f->adapters_ || lin.spec.r > 0;
  std::vector<bool> trains(n, false);
  for (int64_t i : trained.layers) {
    if (i < 0 || i >= n) return absl::InvalidArgumentError(absl::StrCat("no decoder layer ", i));
    trains[i] = true;
  }

  for (int64_t i = 0; i < n; ++i) {
    const int64_t owner = i % world;
    LayerLayout layout = trains[i] ? dense : base;
    layout.sliding = config.IsSlidingLayer(i);
    at::Tensor frozen, trainable;
    at::Tensor offsets = at::zeros({model::kNumProj}, dev.dtype(at::kFloat));
    if (rank == owner) {
      model::DecoderLayer layer;
      if (i == 0) {
        layer = std::move(first);
      } else {
        auto loaded = source.LoadLayer(i);
        if (!loaded.ok()) return loaded.status();
        layer = *std::move(loaded);
      }
      if (auto s = layout.Check(layer); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", i, ": ", s.message()));
      }
      frozen = layout.FlattenFrozen(layer);
      trainable = layout.FlattenTrainable(layer);
      std::vector<float> o = layout.NestedOffsets(layer);
      offsets.copy_(at::tensor(o, at::kFloat));
    } else {
      frozen = at::empty({layout.frozen_bytes}, dev.dtype(at::kByte));
      trainable = at::empty({layout.trainable_floats}, dev.dtype(at::kFloat));
    }
    for (at::Tensor* t : {&frozen, &trainable, &offsets}) {
      if (world > 1) {
        if (auto s = comm->Broadcast(*t, owner); !s.ok()) return s;
      }
    }
    at::Tensor o = offsets.to(at::kCPU);
    layout.SetNestedOffsets(std::vector<float>(o.data_ptr<float>(), o.data_ptr<float>() + o.numel()));
    const int64_t part = f->shard_index();
    const int64_t tf = layout.trainable_shard_floats(shards);
    f->frozen_shards_.push_back(f->KeepFrozenSlice(frozen, layout.frozen_shard_bytes(shards)));
    at::Tensor lora = trainable.narrow(0, part * tf, tf);
    if (options.offload_optimizer) {
      f->lora_shards_.push_back(f->copies_.HostEmpty(tf, at::kFloat).copy_(lora));
      f->grad_shards_.push_back(at::zeros({tf}, at::kFloat));
    } else {
      f->lora_shards_.push_back(lora.clone());
      f->grad_shards_.push_back(at::zeros({tf}, dev.dtype(at::kFloat)));
    }
    f->layouts_.push_back(std::move(layout));
  }
  if (auto s = f->MakeTrainedUnits(trained); !s.ok()) return s;
  return f;
}

at::Tensor FsdpLayers::KeepFrozenSlice(const at::Tensor& full, int64_t shard_bytes) const {
  const int64_t part = shard_index();
  at::Tensor mine = full.narrow(0, part * shard_bytes, shard_bytes);
  // Offloaded: straight into host memory (also with a CPU "device", so that
  // the streamed path is the one the CPU tests run).
  if (options_.cpu_offload) return copies_.HostEmpty(shard_bytes, at::kByte).copy_(mine);
  return mine.clone();
}

at::Tensor FsdpLayers::OnDevice(const at::Tensor& shard) const {
  // An offloaded shard is copied up just before its gather.
  return shard.device() == device_ ? shard : shard.to(device_, /*non_blocking=*/true);
}

void FsdpLayers::ShardEdge(Edge e, const std::vector<at::Tensor>& tensors) {
  EdgeUnit& unit = edges_[e];
  unit.layout = FrozenUnitLayout::For(tensors, shards_);
  unit.shard = KeepFrozenSlice(unit.layout.Flatten(tensors), unit.layout.shard_bytes(shards_));
}

void FsdpLayers::StartEdgeGather(Edge e) {
  PublishUnit(EdgeUnitId(e));  // a trained edge updated on the host
  EdgeUnit& unit = edges_[e];
  if (unit.full.defined()) return;
  at::Tensor shard = OnDevice(unit.shard);
  if (shards_ == 1) {
    unit.full = shard;
    return;
  }
  unit.full = at::empty({unit.layout.bytes}, shard.options());
  unit.pending = shard_comm()->AllGather(unit.full, shard);
}

std::vector<at::Tensor> FsdpLayers::WaitEdge(Edge e) {
  StartEdgeGather(e);
  EdgeUnit& unit = edges_[e];
  if (auto s = unit.pending.Wait(); !s.ok()) Fail(s);
  if (unit.views.empty()) {
    unit.views = unit.layout.Views(unit.full);
    if (TrainsUnit(EdgeUnitId(e))) {
      for (at::Tensor& v : unit.views) v.requires_grad_(true);
    }
  }
  return unit.views;
}

at::Tensor FsdpLayers::AcquireEmbedding(bool backward) {
  at::Tensor table = WaitEdge(kEmbedding)[0];
  // Layer 0's gather overlaps the lookup (after a backward the next use of
  // layer 0 follows the update, so nothing is gathered ahead).
  if (!backward) StartGather(0);
  return table;
}

void FsdpLayers::ReleaseEmbedding(bool backward) {
  EdgeUnit& unit = edges_[kEmbedding];
  if (backward && TrainsUnit(EdgeUnitId(kEmbedding))) ReduceEdge(kEmbedding);
  unit.full = at::Tensor();
  unit.views.clear();
}

train::HeadWeights FsdpLayers::AcquireHead() {
  std::vector<at::Tensor> head = WaitEdge(kHead);
  return {head[0], tied_ ? WaitEdge(kEmbedding)[0] : head[1]};
}

void FsdpLayers::ReleaseHead(bool backward) {
  if (backward && TrainsUnit(EdgeUnitId(kHead))) {
    ReduceEdge(kHead);
    if (tied_) ReduceEdge(kEmbedding);  // the LM head's gradient is the table's
  }
  for (Edge e : {kHead, kEmbedding}) {
    if (e == kEmbedding && !tied_) continue;
    edges_[e].full = at::Tensor();
    edges_[e].views.clear();
  }
}

void FsdpLayers::Fail(const absl::Status& status) const {
  // The trainer's loop is not Status-based inside a step: a failed
  // collective unwinds it, and RunJob turns the exception back into a Status.
  throw std::runtime_error(std::string(status.message()));
}

void FsdpLayers::StartGather(int64_t i) {
  if (gathered_.count(i)) return;
  auto g = std::make_unique<Gathered>();
  if (streamed()) {
    StartStreamedGather(i, *g);
    gathered_[i] = std::move(g);
    return;
  }
  const LayerLayout& layout = layouts_[i];
  at::Tensor frozen_shard = OnDevice(frozen_shards_[i]);
  // The float32 masters are updated in place by AdamW; the gathered copy is
  // what the layer computes with, so a rank's own slice is copied too.
  // Without adapters (trained weights) there is nothing trainable to gather.
  if (shards_ == 1) {
    g->frozen = frozen_shard;
    if (adapters_) g->trainable = lora_shards_[i].detach().clone();
  } else {
    auto opts = at::TensorOptions().device(device_);
    g->frozen = at::empty({layout.frozen_bytes}, opts.dtype(at::kByte));
    g->frozen_pending = shard_comm()->AllGather(g->frozen, frozen_shard);
    if (adapters_) {
      g->trainable = at::empty({layout.trainable_floats}, opts.dtype(at::kFloat));
      g->trainable_pending = shard_comm()->AllGather(g->trainable, lora_shards_[i].detach());
    }
  }
  gathered_[i] = std::move(g);
}

const model::DecoderLayer& FsdpLayers::Acquire(int64_t i, bool backward) {
  StartGather(i);
  const int64_t next = backward ? i - 1 : i + 1;
  // The backward walk ends at FirstTrainedLayer(): nothing below it is
  // gathered for it.
  const int64_t lowest = backward ? first_trained_layer_ : 0;
  if (next >= lowest && next < static_cast<int64_t>(layouts_.size())) StartGather(next);
  if (!backward && next == static_cast<int64_t>(layouts_.size())) {
    StartEdgeGather(kHead);  // the loss comes next
    if (tied_) StartEdgeGather(kEmbedding);
  }
  Gathered& g = *gathered_[i];
  if (!g.layer) {
    if (auto s = g.frozen_pending.Wait(); !s.ok()) Fail(s);
    if (auto s = g.trainable_pending.Wait(); !s.ok()) Fail(s);
    copies_.WaitOnCurrent(g.ready);
    auto layer = layouts_[i].Unflatten(g.frozen, g.trainable, TrainsUnit(i));
    if (!layer.ok()) Fail(layer.status());
    g.layer = std::make_unique<model::DecoderLayer>(*std::move(layer));
  }
  return *g.layer;
}

void FsdpLayers::Release(int64_t i, bool backward) {
  auto it = gathered_.find(i);
  if (it == gathered_.end()) return;
  if (!backward) {
    // Keep the layer when backward needs it next (the last layer), or always
    // under shard_grad_op; otherwise it is re-gathered in backward.
    const bool last = i + 1 == static_cast<int64_t>(layouts_.size());
    if (last || options_.sharding == "shard_grad_op") return;
    if (streamed()) free_slots_.push_back(std::move(it->second->slot));
    gathered_.erase(it);
    return;
  }
  c10::NoGradGuard no_grad;
  const model::DecoderLayer& layer = *it->second->layer;
  if (adapters_) {
    at::Tensor mine = ReduceGradient(layouts_[i].FlattenGradients(layer));
    if (options_.offload_optimizer) {
      StageGradients(grad_shards_[i], mine);
    } else {
      grad_shards_[i].add_(mine);
    }
  }
  if (TrainsUnit(i)) {
    AddTrainedGradient(i, ReduceGradient(layouts_[i].FlattenWeightGradients(layer)));
  }
  if (streamed()) free_slots_.push_back(std::move(it->second->slot));
  gathered_.erase(it);
}

at::Tensor FsdpLayers::ReduceGradient(const at::Tensor& full) {
  if (shards_ == 1) {
    if (world() > 1) {
      if (auto s = comm_->AllReduceSum(full); !s.ok()) Fail(s);
    }
    return full;
  }
  at::Tensor mine = at::empty({full.numel() / shards_}, full.options());
  if (auto s = shard_comm()->ReduceScatterSum(mine, full).Wait(); !s.ok()) Fail(s);
  if (replica_group_) {
    if (auto s = replica_group_->AllReduceSum(mine); !s.ok()) Fail(s);
  }
  return mine;
}

absl::StatusOr<at::Tensor> FsdpLayers::GatherFull(const at::Tensor& shard) {
  if (shards_ == 1) return shard.detach().to(at::kCPU);
  // With offload_optimizer the state is in host memory; NCCL gathers on the device.
  at::Tensor mine = shard.detach().to(device_);
  at::Tensor full = at::empty({mine.numel() * shards_}, mine.options());
  if (auto s = shard_comm()->AllGather(full, mine).Wait(); !s.ok()) return s;
  return full.to(at::kCPU);
}

void FsdpLayers::AddByKey(int64_t i, const at::Tensor& full, const std::string& suffix,
                          std::map<std::string, at::Tensor>& out) const {
  const LayerLayout& layout = layouts_[i];
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = layout.linears[p];
    for (lora::AdapterPart part : lora::AdapterParts(lin.spec)) {
      const std::vector<int64_t> shape = lin.PartShape(part);
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      out[train::PeftKey(i, p, part, layout.fused) + suffix] =
          full.narrow(0, lin.Offset(part), numel).view(shape).clone();
    }
  }
}

absl::StatusOr<std::map<std::string, at::Tensor>> FsdpLayers::GatherAdapterTensors() {
  c10::NoGradGuard no_grad;
  WaitForUpdate();
  std::map<std::string, at::Tensor> out;
  for (int64_t i = 0; i < static_cast<int64_t>(layouts_.size()); ++i) {
    auto full = GatherFull(lora_shards_[i]);
    if (!full.ok()) return full.status();
    AddByKey(i, *full, "", out);
  }
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> FsdpLayers::GatherTrainableState(
    const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq) {
  if (!adapters_) return GatherWeightState(exp_avg, exp_avg_sq);
  c10::NoGradGuard no_grad;
  WaitForUpdate();
  const size_t n = layouts_.size();
  if (exp_avg.size() != n || exp_avg_sq.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GatherTrainableState: expected ", n, " moment shards (one per layer), got ",
        exp_avg.size(), " and ", exp_avg_sq.size()));
  }
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < n; ++i) {
    const int64_t layer = static_cast<int64_t>(i);
    const std::array<std::pair<const at::Tensor*, const char*>, 3> parts = {
        {{&lora_shards_[i], ""}, {&exp_avg[i], kExpAvgSuffix}, {&exp_avg_sq[i], kExpAvgSqSuffix}}};
    for (const auto& [shard, suffix] : parts) {
      auto full = GatherFull(*shard);
      if (!full.ok()) return full.status();
      AddByKey(layer, *full, suffix, out);
    }
  }
  return out;
}

absl::Status FsdpLayers::LoadTrainableState(const std::map<std::string, at::Tensor>& state,
                                            std::vector<at::Tensor>& exp_avg,
                                            std::vector<at::Tensor>& exp_avg_sq) {
  if (!adapters_) return LoadWeightState(state, exp_avg, exp_avg_sq);
  c10::NoGradGuard no_grad;
  WaitForUpdate();
  const size_t n = layouts_.size();
  if (exp_avg.size() != n || exp_avg_sq.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LoadTrainableState: expected ", n, " moment shards (one per layer), got ",
        exp_avg.size(), " and ", exp_avg_sq.size()));
  }
  const int64_t part = shard_index();
  for (size_t i = 0; i < n; ++i) {
    const LayerLayout& layout = layouts_[i];
    const std::array<std::pair<at::Tensor*, const char*>, 3> parts = {
        {{&lora_shards_[i], ""}, {&exp_avg[i], kExpAvgSuffix}, {&exp_avg_sq[i], kExpAvgSqSuffix}}};
    for (const auto& [shard, suffix] : parts) {
      // The full flat buffer (padding stays zero), then this rank's slice.
      at::Tensor full = at::zeros({layout.trainable_floats}, at::kFloat);
      for (int p = 0; p < model::kNumProj; ++p) {
        const LinearLayout& lin = layout.linears[p];
        for (lora::AdapterPart part : lora::AdapterParts(lin.spec)) {
          const std::string key =
              train::PeftKey(static_cast<int64_t>(i), p, part, layout.fused) + suffix;
          auto it = state.find(key);
          if (it == state.end()) return absl::NotFoundError(absl::StrCat(key, ": missing"));
          const std::vector<int64_t> want = lin.PartShape(part);
          int64_t numel = 1;
          for (int64_t d : want) numel *= d;
          if (it->second.sizes() != at::IntArrayRef(want)) {
            return absl::InvalidArgumentError(absl::StrCat(
                key, " has shape ", c10::str(it->second.sizes()), ", the model expects ",
                c10::str(at::IntArrayRef(want)), " (was it trained with another lora.r?)"));
          }
          full.narrow(0, lin.Offset(part), numel).copy_(it->second.reshape({-1}));
        }
      }
      const int64_t tf = shard->numel();
      shard->copy_(full.narrow(0, part * tf, tf));
    }
  }
  return absl::OkStatus();
}

int64_t FsdpLayers::frozen_shard_bytes() const {
  int64_t total = 0;
  for (const EdgeUnit& unit : edges_) total += unit.shard.numel();
  for (const at::Tensor& t : frozen_shards_) total += t.numel();
  return total;
}

int64_t FsdpLayers::trainable_shard_floats() const {
  int64_t total = 0;
  for (const at::Tensor& t : lora_shards_) total += t.numel();
  return total;
}

}  // namespace rigtune::dist
