// The shape of the trainer's checkpointed step, decided from sizes alone
// and shared by the trainer and the memory planner (memory_plan.h): whether
// and how the MLP is cut into row chunks (Note [Row-tiled MLP] in
// trainer.cc), and what the recompute keeps from the forward
// (train.recompute; Note [Keeping the gate/up product] in
// worker/model/llama.cc, Note [Where the kept products live] in
// memory_plan.cc).
//
//   const int64_t chunk = MlpChunkTokens(tokens, cfg.intermediate_size, 2, 0);
//   if (KeepsMlpProducts(ParseRecompute("auto"), offload, chunk, needed, host)) ...
#ifndef RIGTUNE_WORKER_PLAN_STEP_POLICY_H_
#define RIGTUNE_WORKER_PLAN_STEP_POLICY_H_

#include <cstdint>
#include <string>

namespace rigtune::plan {

inline constexpr int64_t kGiB = int64_t{1} << 30;

// Note [Row-tiled MLP]: rows of one MLP chunk in the trainer's checkpointed
// step, or 0 for an untiled MLP. `requested` is train.mlp_chunk_tokens (> 0:
// that many rows whenever the micro-batch has more tokens; 0: automatic).
// Automatic tiling starts when the micro-batch's gate/up product
// ([tokens, 2 × intermediate] in the compute dtype) would pass
// kMlpTileAboveBytes, and then cuts chunks whose product stays within
// kMlpChunkBytes (a multiple of 256 rows). Shapes of ordinary training
// (Llama-2-70B at 4 × 2048: 0.94 GB) stay untiled; long sequences are cut
// (Llama-3.1-8B at 81,920 tokens: 4,608-row chunks).
inline constexpr int64_t kMlpTileAboveBytes = kGiB;
inline constexpr int64_t kMlpChunkBytes = int64_t{256} << 20;
int64_t MlpChunkTokens(int64_t tokens, int64_t intermediate_size, int64_t dtype_bytes,
                       int64_t requested);

// train.recompute: what the checkpointed step's recompute rebuilds. kFull
// recomputes every layer from its input; kKeepMlp keeps each layer's MLP
// gate/up product from the no-grad forward and rebuilds the MLP without its
// GEMMs (Note [Keeping the gate/up product] in worker/model/llama.cc); kAuto
// picks kKeepMlp where KeepsMlpProducts says so.
enum class Recompute { kFull, kKeepMlp, kAuto };
// "full", "keep_mlp", "auto" (the job file's names); anything else is kAuto.
Recompute ParseRecompute(const std::string& name);

// Offloaded layers whose device-to-host copies may be outstanding at once
// (see ActivationStash): their tensors stay on the device until copied.
inline constexpr int64_t kOffloadLayersInFlight = 2;
// kAuto keeps the products in pinned host memory only while they and the
// offloaded layer inputs take at most this fraction of the host's memory
// (per rank sharing it).
inline constexpr double kKeepMlpHostFraction = 0.5;
// kAuto also keeps products on the device where the plan leaves room on the
// card: as many layers' as fit this share of the room (the rest of it stays
// free for what the plan does not see: the allocator's rounding, other
// tenants of the card).
inline constexpr double kKeepMlpDeviceRoomShare = 0.8;

// Whether a checkpointed step keeps the gate/up products under `policy`
// (PlanMemory further drops kAuto's products where the plan would not fit):
// never with a row-tiled MLP (`mlp_chunk_tokens` > 0: at that length the
// products would be huge; the tiled recompute stays); kKeepMlp otherwise
// always (on the device without activation offload); kAuto only with
// activation offload and when `host_bytes_needed` (the rank's host memory
// with the products pinned) fits kKeepMlpHostFraction of `host_memory_bytes`
// (0 = unknown: assumed to fit). Whether a layer's gate/up run as one product is the
// trainer's per-layer test (model::MlpKeepsGateUp).
bool KeepsMlpProducts(Recompute policy, bool activation_offload, int64_t mlp_chunk_tokens,
                      int64_t host_bytes_needed, int64_t host_memory_bytes);
// Bytes of one layer's gate/up product: tokens × 2 × intermediate × d.
int64_t GateUpProductBytes(int64_t tokens, int64_t intermediate_size, int64_t dtype_bytes);
// Host memory a pinned tensor of `bytes` takes: LibTorch's pinned host
// allocator rounds each block up to a power of two (a 344 MiB product of
// Llama-2-7B at 4 × 2048 takes 512 MiB).
int64_t PinnedHostBytes(int64_t bytes);

}  // namespace rigtune::plan

#endif  // RIGTUNE_WORKER_PLAN_STEP_POLICY_H_
