#include "server/sse_events.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "server/job_state.h"

namespace rigtune::server {

namespace {

std::string Frame(const rigtune::v1::JobEvent& event) {
  const char* kind = event.has_state_change() ? "state"
                     : event.has_metrics()    ? "metrics"
                     : event.has_log()        ? "log"
                     : event.has_validation() ? "validation"
                                              : "checkpoint";
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(event, &json, options);
  return absl::StrCat("id: ", event.seq(), "\nevent: ", kind, "\ndata: ", json, "\n\n");
}

}  // namespace

absl::StatusOr<SseBatch> NextSseBatch(Coordinator& coordinator, const std::string& id,
                                      int64_t after_seq) {
  SseBatch batch;
  batch.after_seq = after_seq;
  batch.generation = coordinator.event_generation();
  rigtune::v1::ListJobEventsRequest request;
  request.set_id(id);
  request.set_after_seq(after_seq);
  absl::StatusOr<rigtune::v1::ListJobEventsResponse> page = coordinator.ListJobEvents(request);
  if (!page.ok()) return page.status();
  for (const rigtune::v1::JobEvent& event : page->events()) {
    absl::StrAppend(&batch.frames, Frame(event));
    batch.after_seq = event.seq();
  }
  if (!batch.frames.empty()) return batch;
  absl::StatusOr<rigtune::v1::Job> job = coordinator.GetJob(id);
  if (!job.ok()) return job.status();
  if (IsTerminal(job->state()) && batch.after_seq >= job->last_event_seq()) {
    batch.frames = "event: end\ndata: {}\n\n";
    batch.finished = true;
  }
  return batch;
}

}  // namespace rigtune::server
