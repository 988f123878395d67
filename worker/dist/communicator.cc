#include "worker/dist/communicator.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RIGTUNE_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace rigtune::dist {
namespace {

// Note [Naming the rank that failed]
// A collective that fails only says that *a* peer is gone (Gloo: "connection
// closed by peer", NCCL: a watchdog timeout). Every rank therefore writes a
// timestamp into the rendezvous store once a second; on failure we read them
// all and name the ranks whose heartbeat is older than a few seconds. The
// store is hosted by rank 0: if rank 0 itself died, reading fails and the
// message says so.
constexpr const char* kHeartbeatPrefix = "rigtune/heartbeat/";
constexpr double kHeartbeatStaleSeconds = 3.0;

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<int64_t> EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  int64_t out = 0;
  if (!absl::SimpleAtoi(v, &out) || out < 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, "=", v, " is not a non-negative integer"));
  }
  return out;
}

}  // namespace

absl::StatusOr<DistEnv> DistEnv::FromEnvironment() {
  DistEnv env;
  for (auto [name, out, fallback] :
       {std::tuple{"WORLD_SIZE", &env.world_size, int64_t{1}}, {"RANK", &env.rank, int64_t{0}},
        {"LOCAL_RANK", &env.local_rank, int64_t{-1}},
        {"LOCAL_WORLD_SIZE", &env.local_world_size, int64_t{-1}}}) {
    auto v = EnvInt(name, fallback);
    if (!v.ok()) return v.status();
    *out = *v;
  }
  if (env.world_size < 1) return absl::InvalidArgumentError("WORLD_SIZE must be >= 1");
  if (env.rank >= env.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("RANK=", env.rank, " is not below WORLD_SIZE=", env.world_size));
  }
  if (env.local_world_size < 0) env.local_world_size = env.world_size;
  if (env.local_rank < 0) env.local_rank = env.rank % env.local_world_size;
  if (env.world_size % env.local_world_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("LOCAL_WORLD_SIZE=", env.local_world_size,
                                                   " does not divide WORLD_SIZE=", env.world_size));
  }
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a) env.master_addr = a;
  auto port = EnvInt("MASTER_PORT", 29500);
  if (!port.ok()) return port.status();
  if (*port < 1 || *port > 65535) return absl::InvalidArgumentError("MASTER_PORT out of range");
  env.master_port = static_cast<int>(*port);
  return env;
}

Pending::Pending(Communicator* comm, c10::intrusive_ptr<c10d::Work> work, std::string what,
                 std::function<void()> then)
    : comm_(comm), work_(std::move(work)), what_(std::move(what)), then_(std::move(then)) {}

Pending::~Pending() {
  if (work_) (void)Wait();
}

absl::Status Pending::Wait() {
  if (!work_) return absl::OkStatus();
  auto work = std::move(work_);
  work_.reset();
  try {
    work->wait();
  } catch (const std::exception& e) {
    return comm_->Describe(what_, e.what());
  }
  if (then_) std::exchange(then_, nullptr)();
  return absl::OkStatus();
}

Communicator::Communicator(DistEnv env, double timeout_seconds)
    : env_(std::move(env)), timeout_seconds_(timeout_seconds) {}

Communicator::~Communicator() {
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Create(const DistEnv& env,
                                                                   at::Device device,
                                                                   double timeout_seconds,
                                                                   const std::string& backend) {
  // The job file's validation has checked the name; what it cannot know is
  // the device this rank ended up on.
  if (backend == "nccl" && !device.is_cuda()) {
    return absl::InvalidArgumentError(
        "dist.backend: nccl needs CUDA devices (this rank trains on the CPU); use auto or gloo");
  }
  std::unique_ptr<Communicator> comm(new Communicator(env, timeout_seconds));
  comm->device_ = device;
  comm->staged_ = device.is_cuda() && backend == "gloo";
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(env.master_port);
    opts.isServer = env.rank == 0;
    opts.numWorkers = env.world_size;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
    comm->store_ = tcp;
    auto store = c10::make_intrusive<c10d::PrefixStore>("rigtune/pg", tcp);
    if (auto s = comm->CreateBackend(store, env.rank, env.world_size); !s.ok()) return s;
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rendezvous at ", env.master_addr, ":",
                                               env.master_port, " as rank ", env.rank, " of ",
                                               env.world_size, " failed: ", e.what()));
  }
  comm->heartbeat_ = std::thread([c = comm.get()] { c->Heartbeat(); });
  return comm;
}

absl::Status Communicator::CreateBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                         int64_t rank, int64_t size) {
  const auto timeout =
      std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds_ * 1000));
  if (device_.is_cuda() && !staged_) {
#ifdef RIGTUNE_WITH_CUDA
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout;
    backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(rank),
                                                           static_cast<int>(size), o);
    return absl::OkStatus();
#else
    return absl::FailedPreconditionError("NCCL needs the cuda build (cmake --preset cuda)");
#endif
  }
  auto o = c10d::ProcessGroupGloo::Options::create(timeout);
  o->devices.push_back(root()->env_.num_nodes() > 1 ? c10d::ProcessGroupGloo::createDefaultDevice()
                                            : c10d::ProcessGroupGloo::createDeviceForHostname(
                                                  "127.0.0.1"));
  backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(rank),
                                                         static_cast<int>(size), o);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Subgroup(
    const std::string& name, const std::vector<int64_t>& ranks) {
  auto it = std::find(ranks.begin(), ranks.end(), env_.rank);
  if (it == ranks.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", env_.rank, " is not in subgroup ", name));
  }
  DistEnv sub = env_;
  sub.rank = it - ranks.begin();
  sub.world_size = static_cast<int64_t>(ranks.size());
  sub.local_world_size = sub.world_size;
  std::unique_ptr<Communicator> comm(new Communicator(sub, timeout_seconds_));
  comm->device_ = device_;
  comm->staged_ = staged_;
  comm->store_ = store_;
  comm->parent_ = this;
  try {
    auto store = c10::make_intrusive<c10d::PrefixStore>("rigtune/pg/" + name, store_);
    if (auto s = comm->CreateBackend(store, sub.rank, sub.world_size); !s.ok()) return s;
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("creating subgroup ", name, " on rank ", env_.rank, ": ", e.what()));
  }
  return comm;
}

void Communicator::Heartbeat() {
  const std::string key = absl::StrCat(kHeartbeatPrefix, env_.rank);
  while (!stop_) {
    try {
      const std::string now = absl::StrFormat("%.3f", NowSeconds());
      store_->set(key, std::vector<uint8_t>(now.begin(), now.end()));
    } catch (const std::exception&) {
      // The store is gone (rank 0 exited); collectives will report it.
    }
    for (int i = 0; i < 10 && !stop_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

std::string Communicator::SilentRanks() {
  std::vector<std::string> silent;
  const double now = NowSeconds();
  try {
    for (int64_t r = 0; r < env_.world_size; ++r) {
      const std::string key = absl::StrCat(kHeartbeatPrefix, r);
      if (!store_->check({key})) {
        silent.push_back(absl::StrCat("rank ", r, " never reported"));
        continue;
      }
      std::vector<uint8_t> v = store_->get(key);
      double t = 0;
      if (absl::SimpleAtod(std::string(v.begin(), v.end()), &t) &&
          now - t > kHeartbeatStaleSeconds) {
        silent.push_back(absl::StrCat("rank ", r, " stopped responding ",
                                      static_cast<int64_t>(now - t), " s ago"));
      }
    }
  } catch (const std::exception&) {
    return "rank 0 (which hosts the rendezvous store) is unreachable";
  }
  return absl::StrJoin(silent, "; ");
}

absl::Status Communicator::Describe(const std::string& what, const std::string& error) {
  if (parent_ != nullptr) return parent_->Describe(what, error);
  // A peer that just died still has a fresh heartbeat: give it time to age.
  std::string silent = SilentRanks();
  for (int i = 0; silent.empty() && i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    silent = SilentRanks();
  }
  return absl::UnavailableError(absl::StrCat(
      what, " failed on rank ", env_.rank, ": ",
      silent.empty() ? "" : absl::StrCat(silent, " (", error, ")"), silent.empty() ? error : ""));
}

// Note [Staging CUDA tensors for Gloo]
// With backend "gloo" on GPUs, a collective runs on host copies: the inputs
// are copied down before it starts (a synchronous copy, so the values are
// those the stream had produced), Gloo runs it on its own threads while the
// caller computes, and Wait() copies the result back up on the caller's
// stream.
at::Tensor Communicator::Host(const at::Tensor& t) const {
  return staged_ ? t.to(at::kCPU) : t;
}

Pending Communicator::AllGather(at::Tensor full, at::Tensor shard) {
  if (!staged_) return Pending(this, backend_->_allgather_base(full, shard), "all-gather");
  at::Tensor host = at::empty(full.sizes(), full.options().device(at::kCPU));
  at::Tensor input = Host(shard);
  auto work = backend_->_allgather_base(host, input);
  return Pending(this, work, "all-gather", [full, host]() mutable { full.copy_(host); });
}

Pending Communicator::ReduceScatterSum(at::Tensor shard, at::Tensor full) {
  c10d::ReduceScatterOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  if (!staged_) {
    return Pending(this, backend_->_reduce_scatter_base(shard, full, opts), "reduce-scatter");
  }
  at::Tensor host = at::empty(shard.sizes(), shard.options().device(at::kCPU));
  at::Tensor input = Host(full);
  auto work = backend_->_reduce_scatter_base(host, input, opts);
  return Pending(this, work, "reduce-scatter", [shard, host]() mutable { shard.copy_(host); });
}

// In place on `t` (through a host copy when staged).
Pending Communicator::InPlace(at::Tensor t, const char* what,
                              const std::function<c10::intrusive_ptr<c10d::Work>(
                                  std::vector<at::Tensor>&)>& op) {
  std::vector<at::Tensor> ts{Host(t)};
  auto work = op(ts);
  if (!staged_) return Pending(this, work, what);
  return Pending(this, work, what, [t, host = ts[0]]() mutable { t.copy_(host); });
}

absl::Status Communicator::AllReduceSum(at::Tensor t) {
  return InPlace(t, "all-reduce", [&](std::vector<at::Tensor>& ts) {
           return backend_->allreduce(ts);
         }).Wait();
}

absl::Status Communicator::Broadcast(at::Tensor t, int64_t root) {
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  return InPlace(t, "broadcast", [&](std::vector<at::Tensor>& ts) {
           return backend_->broadcast(ts, opts);
         }).Wait();
}

absl::Status Communicator::Barrier() {
  at::Tensor t = at::zeros({1}, at::TensorOptions().device(device_));
  return AllReduceSum(t);
}

double Communicator::SumOverRanks(double v) {
  if (env_.world_size == 1) return v;
  at::Tensor t = at::full({1}, v, at::TensorOptions().dtype(at::kDouble).device(device_));
  absl::Status s = AllReduceSum(t);
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  return t.item<double>();
}

}  // namespace rigtune::dist
