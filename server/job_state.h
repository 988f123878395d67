// The job state machine: which state changes are legal.
//
//   QUEUED ──▶ STARTING ──▶ RUNNING ──▶ SUCCEEDED
//     │  ▲        │   │        │  │
//     │  └────────┴───┼────────┘  └──▶ FAILED      (retry: back to QUEUED)
//     ▼               ▼               ▲
//   PAUSED ◀──── PAUSING ─────────────┘
//     │               │
//     ▼               ▼
//   CANCELLED ◀── CANCELLING ◀── STARTING, RUNNING, PAUSING
//
// CANCELLED, SUCCEEDED and FAILED are terminal: nothing leaves them.
#ifndef RIGTUNE_SERVER_JOB_STATE_H_
#define RIGTUNE_SERVER_JOB_STATE_H_

#include <string>

#include "absl/status/status.h"
#include "rigtune/v1/job_service.pb.h"

namespace rigtune::server {

using State = rigtune::v1::Job::State;

// True for CANCELLED, SUCCEEDED and FAILED.
bool IsTerminal(State state);

// True while worker processes may exist for the job (STARTING, RUNNING,
// PAUSING, CANCELLING).
bool HasWorkers(State state);

// OK when `from` may change to `to`; FAILED_PRECONDITION naming both
// otherwise. A state "changing" to itself is not a transition and fails.
absl::Status CheckTransition(State from, State to);

// "RUNNING", "PAUSED", ...
std::string StateName(State state);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_JOB_STATE_H_
