// SSE framing of a job's events, free of any transport: the HTTP front end
// asks for the next batch on a handler thread and writes it out
// asynchronously, so an open stream holds a socket and a few buffers, never a
// thread (see Note [Streams hold no thread] in http_connection.cc).
//
// Each JobEvent is one frame whose "id:" is its seq, so a reconnecting
// client's Last-Event-ID resumes the stream:
//
//   id: 7
//   event: metrics            (state | metrics | log | validation | checkpoint)
//   data: {"seq": "7", ...}   (proto3 JSON of the JobEvent)
//
// Once the job's terminal state change was sent, "event: end" closes it.
#ifndef RIGTUNE_SERVER_SSE_EVENTS_H_
#define RIGTUNE_SERVER_SSE_EVENTS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/coordinator.h"

namespace rigtune::server {

struct SseBatch {
  std::string frames;        // zero or more frames, ready to write
  int64_t after_seq = 0;     // the seq of the last event in `frames`
  bool finished = false;     // `frames` ends with the "end" frame
  int64_t generation = 0;    // Coordinator::event_generation() before the read
};

// The events of job `id` after `after_seq` (at most one page). Empty and not
// finished: nothing new yet; wait until the coordinator's event generation
// moves past `generation`.
absl::StatusOr<SseBatch> NextSseBatch(Coordinator& coordinator, const std::string& id,
                                      int64_t after_seq);

// A comment frame that keeps idle streams alive through proxies and lets the
// server notice a peer that went away.
inline constexpr char kSseKeepAlive[] = ": keep-alive\n\n";

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_SSE_EVENTS_H_
