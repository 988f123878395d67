// How the CLI prints things: proto3 JSON for --json, aligned text for
// people.
#ifndef RIGTUNE_CLIENT_RENDER_H_
#define RIGTUNE_CLIENT_RENDER_H_

#include <string>

#include "google/protobuf/message.h"
#include "rigtune/v1/job_service.pb.h"

namespace rigtune::client {

// One message as proto3 JSON on one line (field names as in the .proto).
std::string ToJsonLine(const google::protobuf::Message& message);

// ID, STATE, QUEUE, GPUS, STEP, LOSS, MODEL: one line per job.
void PrintJobTable(const rigtune::v1::ListJobsResponse& response);

// Every field a person cares about, one per line.
void PrintJob(const rigtune::v1::Job& job);

// "12:03:04 RUNNING <- STARTING: all 2 rank(s) registered", "... step 10/100 loss 1.23",
// "... log: ...", "... checkpoint step 20 -> /path",
// "... validation step 20  loss 1.31  perplexity 3.706  5120 tokens".
std::string FormatEvent(const rigtune::v1::JobEvent& event);

// "[########------------] 40/100  40%  loss 1.2345  1234 tok/s  ETA 1m20s"
std::string ProgressLine(const rigtune::v1::StepMetrics& metrics);

}  // namespace rigtune::client

#endif  // RIGTUNE_CLIENT_RENDER_H_
