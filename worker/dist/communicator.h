// Communicator: the collectives FSDP needs, over LibTorch's c10d: Gloo on the
// CPU (tests run 2-4 real ranks as processes), NCCL on GPUs. GPUs can also
// talk over Gloo (backend "gloo"): each collective copies its CUDA tensors
// through host memory. That is slower than NCCL, but works where NCCL cannot,
// for example several ranks sharing one GPU.
//
// Rendezvous follows torchrun's conventions (MASTER_ADDR, MASTER_PORT, RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), so the same worker runs under
// rigtuned, torchrun-style launchers, Slurm or Kubernetes, across nodes.
//
// Every rank also publishes a heartbeat in the rendezvous store; when a
// collective fails or times out the error names the ranks that went silent,
// so a dead peer ends the job with "rank 1 stopped responding ..." instead of
// a hang. See Note [Naming the rank that failed].
//
// Example:
//   ASSIGN_OR_RETURN(DistEnv env, DistEnv::FromEnvironment());
//   ASSIGN_OR_RETURN(auto comm, Communicator::Create(env, device, absl::Seconds(600)));
//   Pending p = comm->AllGather(full, shard);   // async
//   ... compute ...
//   RETURN_IF_ERROR(p.Wait());
#ifndef RIGTUNE_WORKER_DIST_COMMUNICATOR_H_
#define RIGTUNE_WORKER_DIST_COMMUNICATOR_H_

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace c10d {
class Backend;
class Store;
}  // namespace c10d

namespace rigtune::dist {

struct DistEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  // Reads the torchrun variables; all optional for a single process. Errors
  // name the variable (e.g. "RANK=3 is not below WORLD_SIZE=2").
  static absl::StatusOr<DistEnv> FromEnvironment();
  int64_t num_nodes() const { return world_size / local_world_size; }
};

class Communicator;

// An in-flight collective. Wait() returns its outcome; a Pending that is
// never waited on is waited on (and its error dropped) when destroyed.
class Pending {
 public:
  Pending() = default;
  // `then` (optional) runs after the collective succeeded, in Wait().
  Pending(Communicator* comm, c10::intrusive_ptr<c10d::Work> work, std::string what,
          std::function<void()> then = nullptr);
  Pending(Pending&&) noexcept = default;
  Pending& operator=(Pending&&) noexcept = default;
  ~Pending();
  absl::Status Wait();
  bool done() const { return !work_; }

 private:
  Communicator* comm_ = nullptr;
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
  std::function<void()> then_;
};

class Communicator {
 public:
  // Connects to the rendezvous store (rank 0 hosts it) and creates the
  // backend for `device`. `backend`: "auto" (Gloo for the CPU, NCCL for
  // CUDA), "nccl" (CUDA only) or "gloo" (CUDA tensors staged through host
  // memory).
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(const DistEnv& env,
                                                              at::Device device,
                                                              double timeout_seconds,
                                                              const std::string& backend = "auto");
  ~Communicator();

  // A communicator over `ranks` (global ranks, in group order), for example
  // the ranks of one node (hybrid sharding). Collective over exactly those
  // ranks: each of them calls it with the same `name` and list; this rank
  // must be in the list. It shares this communicator's store and heartbeats
  // and must not outlive it. Its rank() and world_size() are group-local.
  absl::StatusOr<std::unique_ptr<Communicator>> Subgroup(const std::string& name,
                                                         const std::vector<int64_t>& ranks);

  int64_t rank() const { return env_.rank; }
  int64_t world_size() const { return env_.world_size; }
  const DistEnv& env() const { return env_; }

  // full = concat over ranks of `shard` (full.numel() == world_size * shard.numel()).
  Pending AllGather(at::Tensor full, at::Tensor shard);
  // shard = this rank's slice of the elementwise sum over ranks of `full`.
  Pending ReduceScatterSum(at::Tensor shard, at::Tensor full);
  // In place: t = sum over ranks of t.
  absl::Status AllReduceSum(at::Tensor t);
  // In place: t = root's t.
  absl::Status Broadcast(at::Tensor t, int64_t root);
  absl::Status Barrier();
  double SumOverRanks(double v);

  // Turns a failed or timed-out collective into a status naming silent ranks.
  absl::Status Describe(const std::string& what, const std::string& error);

 private:
  Communicator(DistEnv env, double timeout_seconds);
  // Gloo or NCCL (as staged_ says) over `store` as rank/size.
  absl::Status CreateBackend(const c10::intrusive_ptr<c10d::Store>& store, int64_t rank,
                             int64_t size);
  // `t` itself, or (staged) a host copy of it.
  at::Tensor Host(const at::Tensor& t) const;
  Pending InPlace(at::Tensor t, const char* what,
                  const std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&)>& op);
  void Heartbeat();
  std::string SilentRanks();
  const Communicator* root() const { return parent_ != nullptr ? parent_ : this; }

  DistEnv env_;
  double timeout_seconds_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
  at::Device device_ = at::kCPU;
  // CUDA tensors over Gloo: every collective copies through host memory.
  bool staged_ = false;
  Communicator* parent_ = nullptr;  // set for subgroups: heartbeats live there
};

}  // namespace rigtune::dist

#endif  // RIGTUNE_WORKER_DIST_COMMUNICATOR_H_
