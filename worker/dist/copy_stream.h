// CopyStream: host <-> device copies that overlap compute, for weight
// streaming (FsdpLayers with cpu_offload or offload_optimizer).
//
// On CUDA the copies up run on a stream of their own and are ordered with the
// compute (current) stream by events only: the copy stream waits for a mark
// recorded on the compute stream, the compute stream waits for a mark recorded
// after the copy; the host never blocks on the device except in Synchronize().
// On the CPU there are no streams: every copy is done when the call returns
// and marks are empty, so the same calls run the same algorithm in CI.
//
// Example (one layer up, ahead of its use):
//   Mark after = copies.RecordCurrent(), ready;   // compute enqueued so far
//   copies.OnCopyStream(after, [&] {
//     slot.copy_(host_shard, /*non_blocking=*/true);  // runs beside compute
//     ready = copies.RecordCurrent();
//   });
//   ... enqueue other compute ...
//   copies.WaitOnCurrent(ready);                  // compute waits, host does not
#ifndef RIGTUNE_WORKER_DIST_COPY_STREAM_H_
#define RIGTUNE_WORKER_DIST_COPY_STREAM_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

namespace rigtune::dist {

// A point in one stream's work; empty on the CPU (everything already done).
using Mark = std::shared_ptr<c10::Event>;

class CopyStream {
 public:
  explicit CopyStream(at::Device device);

  // `numel` elements of host memory that copies to and from the device can
  // read and write asynchronously: page-locked on CUDA (registered with the
  // driver as allocated, without the pinned caching allocator's rounding to
  // a power of two, so 35 GB of weights take 35 GB), ordinary memory on the
  // CPU. Uninitialised.
  at::Tensor HostEmpty(int64_t numel, at::ScalarType dtype) const;

  // Marks the work enqueued so far on the current stream (the compute
  // stream, or the copy stream inside OnCopyStream).
  Mark RecordCurrent() const;
  // Makes the current stream wait for `mark` (the host does not block).
  void WaitOnCurrent(const Mark& mark) const;
  // Blocks the calling thread until `mark` is reached.
  static void Synchronize(const Mark& mark);
  // Runs `fn` with the copy stream as the current stream, once the work
  // marked by `after` is done: copies (`dst.copy_(src, true)`) and
  // collectives issued inside run beside compute enqueued later, and wait
  // only for what came before `after`.
  void OnCopyStream(const Mark& after, const std::function<void()>& fn) const;

 private:
  at::Device device_;
  std::optional<c10::Stream> copy_;  // CUDA only
};

}  // namespace rigtune::dist

#endif  // RIGTUNE_WORKER_DIST_COPY_STREAM_H_
