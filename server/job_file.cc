#include "server/job_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "google/protobuf/util/json_util.h"

namespace rigtune::server {

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Fields numbered from here on are scheduling fields, not job file fields.
constexpr int kFirstSchedulingField = 16;

nlohmann::json ScalarJson(const Message& message, const FieldDescriptor* field) {
  const auto* reflection = message.GetReflection();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return reflection->GetInt32(message, field);
    case FieldDescriptor::CPPTYPE_INT64:
      return reflection->GetInt64(message, field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return reflection->GetUInt32(message, field);
    case FieldDescriptor::CPPTYPE_UINT64:
      return reflection->GetUInt64(message, field);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return reflection->GetDouble(message, field);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return reflection->GetFloat(message, field);
    case FieldDescriptor::CPPTYPE_BOOL:
      return reflection->GetBool(message, field);
    case FieldDescriptor::CPPTYPE_STRING:
      return reflection->GetString(message, field);
    default:
      return nullptr;
  }
}

// The set fields of `message` as plain JSON (numbers stay numbers).
nlohmann::json SetFieldsJson(const Message& message, int field_limit) {
  nlohmann::json out = nlohmann::json::object();
  const auto* descriptor = message.GetDescriptor();
  const auto* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (field->number() >= field_limit) continue;
    if (field->is_repeated()) {
      if (reflection->FieldSize(message, field) == 0) continue;
      nlohmann::json list = nlohmann::json::array();
      for (int j = 0; j < reflection->FieldSize(message, field); ++j) {
        list.push_back(reflection->GetRepeatedString(message, field, j));
      }
      out[field->name()] = std::move(list);
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!reflection->HasField(message, field)) continue;
      if (field->message_type()->full_name() == "google.protobuf.Struct") {
        // Free-form JSON (dataset.chat_template_kwargs): its proto3 JSON form.
        std::string text;
        (void)google::protobuf::util::MessageToJsonString(reflection->GetMessage(message, field),
                                                          &text);
        out[field->name()] = nlohmann::json::parse(text);
        continue;
      }
      nlohmann::json nested = SetFieldsJson(reflection->GetMessage(message, field), 1 << 29);
      if (!nested.empty()) out[field->name()] = std::move(nested);
    } else if (field->has_presence()) {
      if (reflection->HasField(message, field)) out[field->name()] = ScalarJson(message, field);
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
      std::string value = reflection->GetString(message, field);
      if (!value.empty()) out[field->name()] = value;
    }
  }
  return out;
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

nlohmann::json JobFileJson(const rigtune::v1::JobSpec& spec, const JobFileContext& context) {
  nlohmann::json file = SetFieldsJson(spec, kFirstSchedulingField);
  file["job_id"] = context.job_id;
  file["output_dir"] = context.output_dir;
  if (!context.resume_from.empty()) file["resume_from"] = context.resume_from;
  if (context.cpu_only) file["train"]["device"] = "cpu";
  return file;
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", temp);
  size_t written = 0;
  while (written < contents.size()) {
    ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      unlink(temp.c_str());
      return ErrnoError("cannot write", temp);
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    unlink(temp.c_str());
    return ErrnoError("cannot flush", temp);
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    unlink(temp.c_str());
    return ErrnoError("cannot rename into", path);
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dir_fd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace rigtune::server
