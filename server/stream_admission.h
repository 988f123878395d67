// StreamAdmission: caps on concurrent long-lived streams (SSE watches), per
// client address and in total, so a few clients cannot take every stream
// slot. Over the per-client cap a watch gets 429 (RESOURCE_EXHAUSTED), over
// the total cap 503 (UNAVAILABLE); both say to retry later.
//
//   absl::StatusOr<StreamTicket> ticket = admission.Admit("10.0.0.7");
//   if (!ticket.ok()) return ErrorReply(ticket.status());
//   ... stream ...   // the slot frees when the ticket is destroyed
//
// Thread-safe.
#ifndef RIGTUNE_SERVER_STREAM_ADMISSION_H_
#define RIGTUNE_SERVER_STREAM_ADMISSION_H_

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace rigtune::server {

class StreamAdmission;

// One admitted stream; movable, frees its slot when destroyed or reset.
class StreamTicket {
 public:
  StreamTicket() = default;
  StreamTicket(StreamTicket&& other) noexcept { *this = std::move(other); }
  StreamTicket& operator=(StreamTicket&& other) noexcept;
  ~StreamTicket() { Reset(); }

  void Reset();

 private:
  friend class StreamAdmission;
  StreamTicket(StreamAdmission* owner, std::string client)
      : owner_(owner), client_(std::move(client)) {}

  StreamAdmission* owner_ = nullptr;
  std::string client_;
};

class StreamAdmission {
 public:
  StreamAdmission(int max_total, int max_per_client)
      : max_total_(max_total), max_per_client_(max_per_client) {}

  absl::StatusOr<StreamTicket> Admit(const std::string& client);
  int open() const;

 private:
  friend class StreamTicket;
  void Release(const std::string& client);

  const int max_total_;
  const int max_per_client_;
  mutable absl::Mutex mu_;
  int total_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> per_client_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_STREAM_ADMISSION_H_
