#include "server/http_server.h"

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "server/grpc_status.h"

namespace rigtune::server {

namespace {

using google::protobuf::Message;

void SendError(httplib::Response& res, const absl::Status& status) {
  const int http = HttpStatusFor(status.code());
  nlohmann::json body = {{"error",
                          {{"code", http},
                           {"status", absl::StatusCodeToString(status.code())},
                           {"message", std::string(status.message())}}}};
  res.status = http;
  res.set_content(body.dump(), "application/json");
}

std::string ToJson(const Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

template <typename T>
void Reply(httplib::Response& res, const absl::StatusOr<T>& result) {
  if (!result.ok()) return SendError(res, result.status());
  res.set_content(ToJson(*result), "application/json");
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

absl::StatusOr<int64_t> IntParam(const httplib::Request& req, const std::string& name) {
  if (!req.has_param(name.c_str())) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(req.get_param_value(name.c_str()), &value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not an integer"));
  }
  return value;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(Coordinator* coordinator,
                                                               const TokenAuth* auth,
                                                               const std::string& address,
                                                               size_t max_request_bytes) {
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::unique_ptr<HttpServer> server(new HttpServer(coordinator, auth, max_request_bytes));
  server->Routes();
  if (port == 0) {
    server->port_ = server->server_->bind_to_any_port(host);
  } else if (server->server_->bind_to_port(host, port)) {
    server->port_ = port;
  } else {
    server->port_ = -1;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("http_listen: cannot bind ", address));
  }
  return server;
}

HttpServer::HttpServer(Coordinator* coordinator, const TokenAuth* auth, size_t max_request_bytes)
    : coordinator_(coordinator),
      auth_(auth),
      max_request_bytes_(max_request_bytes),
      server_(std::make_unique<httplib::Server>()) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start() {
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::Routes() {
  httplib::Server& s = *server_;
  // Bodies over the limit are refused by httplib before any handler runs;
  // the error handler turns that into a 400 naming the body.
  s.set_payload_max_length(max_request_bytes_);
  s.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (res.status == 413) {
      SendError(res, absl::InvalidArgumentError(absl::StrCat(
                         "body: larger than the ", max_request_bytes_, "-byte request limit")));
    } else if (res.body.empty()) {
      SendError(res, absl::NotFoundError("no such route"));
    }
  });
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/healthz" || req.path == "/readyz";
    if (open) return httplib::Server::HandlerResponse::Unhandled;
    if (absl::Status st = auth_->Check(req.get_header_value("Authorization")); !st.ok()) {
      SendError(res, st);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  s.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    res.status = coordinator_->ready() ? 200 : 503;
    res.set_content(coordinator_->ready() ? "ready\n" : "not ready\n", "text/plain");
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(coordinator_->metrics().Serialize(), "text/plain; version=0.0.4");
  });

  s.Post("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    rigtune::v1::CreateJobRequest request;
    if (absl::Status st = ParseBody(req.body, &request, false); !st.ok()) {
      return SendError(res, st);
    }
    Reply(res, coordinator_->CreateJob(request));
  });
  s.Get("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    rigtune::v1::ListJobsRequest request;
    absl::StatusOr<int64_t> page_size = IntParam(req, "page_size");
    if (!page_size.ok()) return SendError(res, page_size.status());
    if (*page_size < 0 || *page_size > 1000) {
      return SendError(res, absl::InvalidArgumentError("page_size: must be in [0, 1000]"));
    }
    request.set_page_size(static_cast<int32_t>(*page_size));
    request.set_page_token(req.get_param_value("page_token"));
    request.set_label(req.get_param_value("label"));
    if (req.has_param("state")) {
      rigtune::v1::Job::State state;
      if (!rigtune::v1::Job::State_Parse(req.get_param_value("state"), &state)) {
        return SendError(res, absl::InvalidArgumentError("state: not a job state"));
      }
      request.set_state(state);
    }
    Reply(res, coordinator_->ListJobs(request));
  });
  s.Get(R"(/v1/jobs/([^/:]+))", [this](const httplib::Request& req, httplib::Response& res) {
    Reply(res, coordinator_->GetJob(req.matches[1]));
  });
  s.Post(R"(/v1/jobs/([^/:]+):(cancel|pause|resume))",
         [this](const httplib::Request& req, httplib::Response& res) {
           const std::string id = req.matches[1];
           const std::string verb = req.matches[2];
           if (verb == "cancel") {
             rigtune::v1::CancelJobRequest request;
             if (absl::Status st = ParseBody(req.body, &request, true); !st.ok()) {
               return SendError(res, st);
             }
             return Reply(res, coordinator_->CancelJob(id, request.reason()));
           }
           if (!req.body.empty() && req.body != "{}") {
             return SendError(res, absl::InvalidArgumentError(
                                       absl::StrCat("body: :", verb, " takes no fields")));
           }
           Reply(res, verb == "pause" ? coordinator_->PauseJob(id) : coordinator_->ResumeJob(id));
         });
  s.Get(R"(/v1/jobs/([^/:]+)/events)", [this](const httplib::Request& req,
                                                httplib::Response& res) {
    rigtune::v1::ListJobEventsRequest request;
    request.set_id(req.matches[1]);
    absl::StatusOr<int64_t> after = IntParam(req, "after_seq");
    absl::StatusOr<int64_t> page_size = IntParam(req, "page_size");
    if (!after.ok()) return SendError(res, after.status());
    if (!page_size.ok()) return SendError(res, page_size.status());
    if (*page_size < 0 || *page_size > 5000) {
      return SendError(res, absl::InvalidArgumentError("page_size: must be in [0, 5000]"));
    }
    request.set_after_seq(*after);
    request.set_page_size(static_cast<int32_t>(*page_size));
    Reply(res, coordinator_->ListJobEvents(request));
  });
  s.Get(R"(/v1/jobs/([^/:]+)/checkpoints)",
        [this](const httplib::Request& req, httplib::Response& res) {
          Reply(res, coordinator_->ListCheckpoints(req.matches[1]));
        });
  s.Get(R"(/v1/jobs/([^/:]+):watch)", [this](const httplib::Request& req,
                                                httplib::Response& res) {
    auto request = std::make_shared<rigtune::v1::WatchJobRequest>();
    request->set_id(req.matches[1]);
    absl::StatusOr<int64_t> after = IntParam(req, "after_seq");
    if (!after.ok()) return SendError(res, after.status());
    int64_t last_event_id = 0;
    if (req.has_header("Last-Event-ID") &&
        absl::SimpleAtoi(req.get_header_value("Last-Event-ID"), &last_event_id)) {
      *after = std::max(*after, last_event_id);
    }
    request->set_after_seq(*after);
    if (auto job = coordinator_->GetJob(request->id()); !job.ok()) {
      return SendError(res, job.status());
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [this, request](size_t, httplib::DataSink& sink) {
          absl::Status status = coordinator_->WatchJob(
              *request,
              [&sink](const rigtune::v1::JobEvent& event) {
                const char* kind = event.has_state_change() ? "state"
                                   : event.has_metrics()    ? "metrics"
                                   : event.has_log()        ? "log"
                                   : event.has_validation() ? "validation"
                                                            : "checkpoint";
                std::string frame = absl::StrCat("id: ", event.seq(), "\nevent: ", kind,
                                                 "\ndata: ", ToJson(event), "\n\n");
                return sink.write(frame.data(), frame.size());
              },
              [&sink] { return !sink.is_writable(); });
          if (status.ok()) {
            static constexpr char kEnd[] = "event: end\ndata: {}\n\n";
            sink.write(kEnd, sizeof(kEnd) - 1);
          }
          sink.done();
          return true;
        });
  });
}

}  // namespace rigtune::server
