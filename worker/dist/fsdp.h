// FsdpLayers: fully sharded data parallel for QLoRA, as a LayerSource.
// With TrainedWeights it shards full fine-tuning (train.method full) and
// block expansion (llama_pro) instead: the units whose weights train keep
// 1/world of their compute-dtype weights, float32 masters, gradients and
// AdamW moments (Note [Sharded weights] in fsdp_weights.cc).
//
// Each decoder layer is one FSDP unit. Every rank keeps 1/world of the
// layer's frozen bytes (NF4 codes with their quant constants, norms, biases)
// and 1/world of its LoRA weights in float32 with the AdamW moments beside
// them. The token embedding and the head (final norm + LM head; with tied
// embeddings the head reuses the embedding unit) are two more units of
// frozen bytes, gathered for their one use per micro-batch: the embedding
// while layer 0's gather is issued, the head prefetched behind the last
// layer's forward. The trainer's loop drives it:
//   Acquire(i)  wait for layer i's all-gather (issued one layer ahead on the
//               communication stream), rebuild the layer as views of the
//               gathered buffers, and start gathering the next layer;
//   Release(i)  forward: free the gathered layer (full_shard) or keep it for
//               backward (shard_grad_op); backward: reduce-scatter the LoRA
//               gradients to their owners and free the layer.
// Strategies: full_shard (default), shard_grad_op, no_shard (plain data
// parallel: every rank holds everything, gradients are all-reduced), hybrid
// (shard within a node, replicate across nodes: gathers and reduce-scatters
// stay on the node's fast links, and only the gradient shards cross nodes,
// all-reduced between the ranks that hold the same shard; on one node it is
// full_shard).
//
// Loading: layer i is built (read + quantized, or drawn from a seed) by rank
// i % world on its own device and broadcast; each rank keeps only its slice,
// so no rank ever holds more than one whole layer. With cpu_offload the
// frozen shards live in pinned host memory, and with offload_optimizer the
// LoRA masters, their AdamW moments and gradients too; a layer is then
// streamed: copied up on a copy stream of its own into a small pool of
// device buffers one layer ahead of compute (see Note [Streaming layers] in
// fsdp_stream.cc). Trained weights stream the same way: cpu_offload puts
// their compute-dtype shards in host memory and, with them, their masters,
// moments and gradients (Note [Offloaded trained weights]). One process (no
// communicator) uses the same class to stream a model bigger than its GPU.
#ifndef RIGTUNE_WORKER_DIST_FSDP_H_
#define RIGTUNE_WORKER_DIST_FSDP_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/dist/communicator.h"
#include "worker/dist/copy_stream.h"
#include "worker/dist/layer_layout.h"
#include "worker/model/model_builder.h"
#include "worker/train/full_finetune.h"
#include "worker/train/host_optimizer_step.h"
#include "worker/train/trainer.h"

namespace rigtune::dist {

struct FsdpOptions {
  std::string sharding = "full_shard";  // full_shard | shard_grad_op | no_shard | hybrid
  // Frozen shards (and trained units' compute-dtype shards) in pinned host
  // memory; for trained units it implies offload_optimizer.
  bool cpu_offload = false;
  // Masters, moments and gradients in host memory; AdamW runs on the host.
  bool offload_optimizer = false;
};

// Which units train their own weights instead of carrying adapters
// (train.method full: every unit; llama_pro: the inserted blocks). Such a
// layer is dense in the compute dtype; the other layers stay frozen in the
// job's base format.
struct TrainedWeights {
  bool embedding_and_head = false;  // the token embedding, final norm and LM head
  std::vector<int64_t> layers;      // ascending
  bool any() const { return embedding_and_head || !layers.empty(); }
};

class FsdpLayers : public train::LayerSource {
 public:
  // Builds this rank's shards of every layer of `source`, and of the
  // embedding, final norm and LM head of `shell` (its LoadShell(), the same
  // on every rank), which it leaves undefined so that their memory is freed.
  // Collective: every rank must call it. `comm` must outlive the result;
  // null for one process (world size 1, used to stream with cpu_offload).
  // With `trained` (build.lora disabled), those units train their weights;
  // INVALID_ARGUMENT for a trained layer that is not dense.
  static absl::StatusOr<std::unique_ptr<FsdpLayers>> Create(
      model::ModelSource& source, model::LlamaModel& shell, const model::BuildOptions& build,
      Communicator* comm, const FsdpOptions& options, const TrainedWeights& trained = {});

  at::Tensor AcquireEmbedding(bool backward) override;
  void ReleaseEmbedding(bool backward) override;
  train::HeadWeights AcquireHead() override;
  void ReleaseHead(bool backward) override;
  bool TrainsEmbedding() const override { return TrainsUnit(EdgeUnitId(kEmbedding)); }
  int64_t FirstTrainedLayer() const override { return first_trained_layer_; }

  const model::DecoderLayer& Acquire(int64_t i, bool backward) override;
  void Release(int64_t i, bool backward) override;
  std::vector<at::Tensor> Parameters() override;
  std::vector<at::Tensor> Gradients() override;
  void ZeroGradients() override;
  void Update(train::AdamW& optimizer, const std::vector<at::Tensor>& grads, double lr,
              double grad_scale) override;
  void WaitForUpdate() override { host_step_.WaitAll(); }
  double SumOverRanks(double v) override { return comm_ ? comm_->SumOverRanks(v) : v; }
  // Each shard of the gradients lives once per shard group: the global
  // squared norm sums over one group (no_shard: every rank has it all).
  double SumGradSquares(double local) override {
    return shards_ == 1 ? local : shard_comm()->SumOverRanks(local);
  }

  // Every layer's full LoRA weights by PEFT key (collective; float32, CPU):
  // for adapter export.
  absl::StatusOr<std::map<std::string, at::Tensor>> GatherAdapterTensors();
  // Whether units train their weights (Create with TrainedWeights).
  bool trains_weights() const { return !trained_.empty(); }
  // The trained units' full tensors in the compute dtype by Hugging Face
  // name, on the CPU (collective): what the output model folder is written
  // from. Every rank gets them.
  absl::StatusOr<std::vector<train::NamedTensor>> GatherTrainedWeights();

  // Suffixes of the AdamW moments' keys in the trainable state.
  static constexpr const char* kExpAvgSuffix = ".exp_avg";
  static constexpr const char* kExpAvgSqSuffix = ".exp_avg_sq";

  // The full, un-sharded trainable state (collective; float32, CPU): every
  // LoRA weight by PEFT key, and its AdamW moments by PEFT key + ".exp_avg" /
  // ".exp_avg_sq". `exp_avg` and `exp_avg_sq` are the moments of the AdamW
  // that updates Parameters() (same order: one flat shard per layer). Being
  // un-sharded, the result can be loaded by any number of ranks. With
  // trained weights: every master by Hugging Face name (as
  // train::FullModelLayers::MasterState names them) and its moments by that
  // name + suffix, so that one-process and sharded checkpoints are the same.
  absl::StatusOr<std::map<std::string, at::Tensor>> GatherTrainableState(
      const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq);

  // The inverse, local (no collective): every rank takes its own slice of
  // each full tensor of `state` (as GatherTrainableState returns it, written
  // by any world size) into its LoRA shards and into `exp_avg` /
  // `exp_avg_sq` (copied in place). NOT_FOUND names a missing key,
  // INVALID_ARGUMENT a shape that does not fit this model's layout.
  absl::Status LoadTrainableState(const std::map<std::string, at::Tensor>& state,
                                  std::vector<at::Tensor>& exp_avg,
                                  std::vector<at::Tensor>& exp_avg_sq);
  int64_t frozen_shard_bytes() const;   // this rank's frozen bytes, all units
  int64_t trainable_shard_floats() const;
  // Bytes of host memory this rank's weights and trainable state take
  // (frozen shards with cpu_offload; masters, moments and gradients with
  // offload_optimizer).
  int64_t host_state_bytes() const;
  // AdamW steps run on the host so far (offload_optimizer, or trained
  // weights with cpu_offload): 0 when the optimizer runs on the device.
  int64_t host_optimizer_steps() const { return host_step_.started(); }
  const LayerLayout& layout(int64_t i) const { return layouts_[i]; }
  int64_t shards() const { return shards_; }

 private:
  // Device buffers one streamed layer is copied up (and gathered) into.
  struct Slot {
    at::Tensor frozen, trainable;              // full layer
    at::Tensor frozen_shard, trainable_shard;  // sharded: this rank's slice, uploaded
  };
  struct Gathered {
    at::Tensor frozen;     // full uint8 buffer
    at::Tensor trainable;  // full float32 buffer
    Pending frozen_pending, trainable_pending;
    std::unique_ptr<model::DecoderLayer> layer;
    Slot slot;  // streamed: where frozen and trainable live
    Mark ready;  // streamed: the copies (and collectives) are enqueued before it
  };
  // A gradient shard on its way down to host memory.
  struct StagedGrad {
    at::Tensor target;  // the host gradient it is added to
    at::Tensor host;    // pinned
    Mark copied;
  };

  // The embedding or head unit: frozen bytes (or, trained, weights).
  struct EdgeUnit {
    FrozenUnitLayout layout;
    at::Tensor shard;  // uint8, device or pinned host
    at::Tensor full;   // while gathered
    std::vector<at::Tensor> views;  // of `full`, made once per gather
    Pending pending;
  };
  enum Edge { kEmbedding = 0, kHead = 1 };
  // A unit whose weights train: float32 master and gradient shards in the
  // element positions of its compute-dtype shard (the unit's bytes).
  struct TrainedUnit {
    int64_t unit;       // UnitId: a layer index, or EdgeUnitId(edge)
    at::ScalarType dtype;  // the compute dtype
    at::Tensor master;  // float32; the shard itself, viewed, unless own_master
    at::Tensor grad;    // float32
    bool own_master = false;  // master is a tensor of its own, rounded into the shard
    bool stale = false;  // a host update may have changed master; the shard waits
  };

  FsdpLayers(Communicator* comm, FsdpOptions options, int64_t shards, at::Device device)
      : comm_(comm), options_(std::move(options)), shards_(shards), device_(device),
        copies_(device) {}
  bool streamed() const { return options_.cpu_offload || options_.offload_optimizer; }
  // Whether AdamW runs on the host (masters, moments and gradients there):
  // offload_optimizer, or trained weights with cpu_offload.
  bool host_optimizer() const {
    return options_.offload_optimizer || (!adapters_ && options_.cpu_offload);
  }
  void StartGather(int64_t i);
  void StartStreamedGather(int64_t i, Gathered& g);
  Slot TakeSlot();
  // host_optimizer(): adds `grads` (device) to `target` (a host gradient),
  // through a pinned staging buffer copied down behind the backward.
  void StageGradients(const at::Tensor& target, const at::Tensor& grads);
  // Adds staged gradients to the host gradients, all but the newest `keep`.
  void FoldStagedGradients(size_t keep);
  // Builds edge unit `e` from `tensors` (full, identical on every rank).
  void ShardEdge(Edge e, const std::vector<at::Tensor>& tensors);
  void StartEdgeGather(Edge e);
  // Waits for edge unit `e` and returns views of its tensors.
  std::vector<at::Tensor> WaitEdge(Edge e);
  // `shard` on this rank's device (an offloaded one is copied up).
  at::Tensor OnDevice(const at::Tensor& shard) const;
  // This rank's slice of a full frozen buffer, kept (device or pinned host).
  at::Tensor KeepFrozenSlice(const at::Tensor& full, int64_t shard_bytes) const;
  // Adds layer i's adapters cut out of `full` to `out`, keyed PEFT key + suffix.
  void AddByKey(int64_t i, const at::Tensor& full, const std::string& suffix,
                std::map<std::string, at::Tensor>& out) const;
  void Fail(const absl::Status& status) const;

  // Units by id: decoder layers 0..n-1, then the embedding and the head.
  int64_t EdgeUnitId(Edge e) const { return static_cast<int64_t>(layouts_.size()) + e; }
  bool TrainsUnit(int64_t unit) const {
    return unit < static_cast<int64_t>(trained_index_.size()) && trained_index_[unit] >= 0;
  }
  TrainedUnit& Trained(int64_t unit) { return trained_[trained_index_[unit]]; }
  at::Tensor& UnitShard(int64_t unit);
  // The unit's tensors by Hugging Face name, with their segments.
  std::vector<std::pair<std::string, Segment>> UnitTensors(int64_t unit) const;
  // Sets up trained_ for `trained` (after every unit is sharded).
  absl::Status MakeTrainedUnits(const TrainedWeights& trained);
  // Sums a unit's full-length gradient `full` over the ranks; returns this
  // rank's shard of the sum.
  at::Tensor ReduceGradient(const at::Tensor& full);
  // Adds the gradients of a trained edge unit's views to its gradient shard.
  void ReduceEdge(Edge e);
  // Adds `shard` (this rank's reduced gradient of a trained unit) to the
  // unit's gradient: in place, or staged down to host memory.
  void AddTrainedGradient(int64_t unit, const at::Tensor& shard);
  // After an update (or a restore): rounds the masters into the
  // compute-dtype shards and drops gathered copies of trained units.
  void PublishTrainedWeights();
  // Drops a gathered copy of `unit` (taken before an update).
  void DropGathered(int64_t unit);
  // A stale trained unit (host update): waits for its update and rounds its
  // master into its shard. Nothing for other units.
  void PublishUnit(int64_t unit);
  // A unit's full flat buffer on the CPU from this rank's `shard` of it
  // (collective unless unsharded).
  absl::StatusOr<at::Tensor> GatherFull(const at::Tensor& shard);
  absl::StatusOr<std::map<std::string, at::Tensor>> GatherWeightState(
      const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq);
  absl::Status LoadWeightState(const std::map<std::string, at::Tensor>& state,
                               std::vector<at::Tensor>& exp_avg,
                               std::vector<at::Tensor>& exp_avg_sq);

  // The ranks that split one copy of the model: all of them, or (hybrid
  // across nodes) the ranks of this node.
  Communicator* shard_comm() const { return shard_group_ ? shard_group_.get() : comm_; }
  // Which slice of every unit this rank keeps.
  int64_t shard_index() const { return shards_ == 1 ? 0 : shard_comm()->rank(); }
  int64_t world() const { return comm_ ? comm_->world_size() : 1; }

  Communicator* comm_;
  std::unique_ptr<Communicator> shard_group_;    // hybrid: this node's ranks
  std::unique_ptr<Communicator> replica_group_;  // hybrid: the same local rank on every node
  FsdpOptions options_;
  int64_t shards_;  // 1 for no_shard
  at::Device device_;
  CopyStream copies_;
  std::vector<Slot> free_slots_;         // streamed: device buffers not in use
  std::vector<StagedGrad> staged_;       // host_optimizer(): oldest first
  std::vector<at::Tensor> free_staging_;
  train::HostOptimizerStep host_step_;   // host_optimizer()
  std::vector<LayerLayout> layouts_;
  std::vector<at::Tensor> frozen_shards_;  // uint8, device or pinned host
  std::vector<at::Tensor> lora_shards_;    // float32 masters, device or pinned host
  std::vector<at::Tensor> grad_shards_;    // float32, device or host
  std::map<int64_t, std::unique_ptr<Gathered>> gathered_;
  std::array<EdgeUnit, 2> edges_;
  bool tied_ = false;  // the LM head is the embedding table
  bool adapters_ = true;  // the layers carry LoRA/DoRA adapters (what trains without trained_)
  std::vector<TrainedUnit> trained_;    // embedding, layers, head order
  std::vector<int64_t> trained_index_;  // by unit id: index into trained_, or -1
  int64_t first_trained_layer_ = 0;
};

}  // namespace rigtune::dist

#endif  // RIGTUNE_WORKER_DIST_FSDP_H_
