#include "server/rest_routes.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "server/grpc_status.h"

namespace rigtune::server {

namespace {

using google::protobuf::Message;

std::string ToJson(const Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

template <typename T>
RestReply Reply(const absl::StatusOr<T>& result) {
  if (!result.ok()) return ErrorReply(result.status());
  RestReply reply;
  reply.body = ToJson(*result);
  return reply;
}

// Parses a JSON body into `message`; unknown fields are errors.
absl::Status ParseBody(const std::string& body, Message* message, bool allow_empty) {
  if (body.empty() && allow_empty) return absl::OkStatus();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(body, message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("body: ", status.message().as_string()));
  }
  return absl::OkStatus();
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX and '+' in a query component; a malformed escape stays as is.
std::string UrlDecode(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%' && i + 2 < text.size() && HexValue(text[i + 1]) >= 0 &&
               HexValue(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The query parameters of a target; a repeated name keeps its last value.
class Query {
 public:
  explicit Query(absl::string_view query) {
    for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(pair, '=');
      params_[UrlDecode(kv.first)] = UrlDecode(kv.second);
    }
  }
  // The query of a request target (the part after '?').
  static Query Of(const std::string& target) {
    const size_t question = target.find('?');
    return Query(question == std::string::npos ? absl::string_view()
                                               : absl::string_view(target).substr(question + 1));
  }
  bool Has(const std::string& name) const { return params_.count(name) > 0; }
  std::string Get(const std::string& name) const {
    auto it = params_.find(name);
    return it == params_.end() ? "" : it->second;
  }

 private:
  std::map<std::string, std::string> params_;
};

// An integer parameter in [min, max]; absent: 0.
absl::StatusOr<int64_t> IntParam(const Query& query, const std::string& name, int64_t max) {
  if (!query.Has(name)) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(query.Get(name), &value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not an integer"));
  }
  if (value < 0 || value > max) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must be in [0, ", max, "]"));
  }
  return value;
}

// Note [Resume position of a watch]
// after_seq (query) and Last-Event-ID (header) say the same thing, so they
// are checked the same way: each must be a non-negative integer (else 400
// naming it) and no larger than the job's last event seq (else 400
// OUT_OF_RANGE: the client cannot have seen an event that does not exist,
// so it is talking about another job or another daemon's store). When both
// are sent the later position wins.
absl::StatusOr<int64_t> SeqValue(absl::string_view name, const std::string& text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": '", text, "' is not an integer"));
  }
  if (value < 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must be >= 0, got ", value));
  }
  return value;
}

}  // namespace

RestReply ErrorReply(const absl::Status& status) {
  const int http = HttpStatusFor(status.code());
  nlohmann::json body = {{"error",
                          {{"code", http},
                           {"status", absl::StatusCodeToString(status.code())},
                           {"message", std::string(status.message())}}}};
  RestReply reply;
  reply.status = http;
  reply.body = body.dump();
  return reply;
}

bool RestRoutes::IsProbe(const std::string& target) {
  const absl::string_view path = absl::string_view(target).substr(0, target.find('?'));
  return path == "/healthz" || path == "/readyz";
}

RestReply RestRoutes::Handle(const RestRequest& request) {
  const size_t question = request.target.find('?');
  const std::string path = request.target.substr(0, question);
  const bool get = request.method == "GET" || request.method == "HEAD";
  if (path == "/healthz" && get) return {200, "text/plain", "ok\n", std::nullopt};
  if (path == "/readyz" && get) {
    const bool ready = coordinator_->ready();
    return {ready ? 200 : 503, "text/plain", ready ? "ready\n" : "not ready\n", std::nullopt};
  }
  if (absl::Status st = auth_->Check(request.authorization); !st.ok()) return ErrorReply(st);
  if (path == "/metrics" && get) {
    return {200, "text/plain; version=0.0.4", coordinator_->metrics().Serialize(), std::nullopt};
  }
  if (absl::StartsWith(path, "/v1/jobs")) return HandleJobs(request, path);
  return ErrorReply(absl::NotFoundError("no such route"));
}

RestReply RestRoutes::HandleJobs(const RestRequest& request, const std::string& path) {
  const Query query = Query::Of(request.target);
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  if (path == "/v1/jobs") {
    if (post) {
      rigtune::v1::CreateJobRequest create;
      if (absl::Status st = ParseBody(request.body, &create, false); !st.ok()) {
        return ErrorReply(st);
      }
      return Reply(coordinator_->CreateJob(create));
    }
    if (!get) return ErrorReply(absl::NotFoundError("no such route"));
    rigtune::v1::ListJobsRequest list;
    absl::StatusOr<int64_t> page_size = IntParam(query, "page_size", 1000);
    if (!page_size.ok()) return ErrorReply(page_size.status());
    list.set_page_size(static_cast<int32_t>(*page_size));
    list.set_page_token(query.Get("page_token"));
    list.set_label(query.Get("label"));
    if (query.Has("state")) {
      rigtune::v1::Job::State state;
      if (!rigtune::v1::Job::State_Parse(query.Get("state"), &state)) {
        return ErrorReply(absl::InvalidArgumentError("state: not a job state"));
      }
      list.set_state(state);
    }
    return Reply(coordinator_->ListJobs(list));
  }
  if (!absl::StartsWith(path, "/v1/jobs/")) return ErrorReply(absl::NotFoundError("no such route"));
  // /v1/jobs/{id}[/events|/checkpoints|:verb]; an id holds neither '/' nor ':'.
  const std::string rest = path.substr(std::string("/v1/jobs/").size());
  const size_t cut = rest.find_first_of("/:");
  const std::string id = rest.substr(0, cut);
  const std::string tail = cut == std::string::npos ? "" : rest.substr(cut);
  if (id.empty()) return ErrorReply(absl::NotFoundError("no such route"));
  if (get && tail.empty()) return Reply(coordinator_->GetJob(id));
  if (get && tail == "/checkpoints") return Reply(coordinator_->ListCheckpoints(id));
  if (get && tail == "/events") {
    rigtune::v1::ListJobEventsRequest events;
    events.set_id(id);
    absl::StatusOr<int64_t> after =
        query.Has("after_seq") ? SeqValue("after_seq", query.Get("after_seq")) : 0;
    if (!after.ok()) return ErrorReply(after.status());
    absl::StatusOr<int64_t> page_size = IntParam(query, "page_size", 5000);
    if (!page_size.ok()) return ErrorReply(page_size.status());
    events.set_after_seq(*after);
    events.set_page_size(static_cast<int32_t>(*page_size));
    return Reply(coordinator_->ListJobEvents(events));
  }
  if (get && tail == ":watch") return Watch(request, id);
  if (post && (tail == ":cancel" || tail == ":pause" || tail == ":resume")) {
    if (tail == ":cancel") {
      rigtune::v1::CancelJobRequest cancel;
      if (absl::Status st = ParseBody(request.body, &cancel, true); !st.ok()) {
        return ErrorReply(st);
      }
      return Reply(coordinator_->CancelJob(id, cancel.reason()));
    }
    if (!request.body.empty() && request.body != "{}") {
      return ErrorReply(
          absl::InvalidArgumentError(absl::StrCat("body: ", tail, " takes no fields")));
    }
    return Reply(tail == ":pause" ? coordinator_->PauseJob(id) : coordinator_->ResumeJob(id));
  }
  return ErrorReply(absl::NotFoundError("no such route"));
}

RestReply RestRoutes::Watch(const RestRequest& request, const std::string& id) {
  const Query query = Query::Of(request.target);
  WatchStart start{id, 0};
  // See Note [Resume position of a watch].
  struct Source {
    const char* name;
    std::optional<std::string> text;
  };
  const Source sources[] = {
      {"after_seq", query.Has("after_seq") ? std::optional(query.Get("after_seq")) : std::nullopt},
      {"Last-Event-ID", request.last_event_id}};
  absl::StatusOr<rigtune::v1::Job> job = coordinator_->GetJob(id);
  if (!job.ok()) return ErrorReply(job.status());
  for (const Source& source : sources) {
    if (!source.text) continue;
    absl::StatusOr<int64_t> seq = SeqValue(source.name, *source.text);
    if (!seq.ok()) return ErrorReply(seq.status());
    if (*seq > job->last_event_seq()) {
      return ErrorReply(absl::OutOfRangeError(
          absl::StrCat(source.name, ": ", *seq, " is past the job's last event (",
                       job->last_event_seq(), ")")));
    }
    start.after_seq = std::max(start.after_seq, *seq);
  }
  RestReply reply;
  reply.content_type = "text/event-stream";
  reply.watch = start;
  return reply;
}

}  // namespace rigtune::server
