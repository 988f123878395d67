#include "worker/train/merge_output.h"

#include <ATen/ATen.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"

namespace rigtune::train {
namespace {

absl::StatusOr<std::string> DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::string("F64");
    case at::kFloat: return std::string("F32");
    case at::kHalf: return std::string("F16");
    case at::kBFloat16: return std::string("BF16");
    case at::kLong: return std::string("I64");
    case at::kInt: return std::string("I32");
    case at::kShort: return std::string("I16");
    case at::kChar: return std::string("I8");
    case at::kByte: return std::string("U8");
    case at::kBool: return std::string("BOOL");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", c10::toString(dtype), " has no safetensors name"));
  }
}

absl::Status Errno(const std::string& path, const char* op) {
  return absl::InternalError(absl::StrCat(path, ": ", op, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const char* p, size_t left, const std::string& path) {
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Errno(path, "write");
    p += w;
    left -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

constexpr const char* kCopiedFiles[] = {
    "generation_config.json", "tokenizer.json",  "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model",        "vocab.json",      "merges.txt",            "added_tokens.json",
    "chat_template.jinja",    "chat_template.json"};

}  // namespace

bool PathExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}


absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}


// Removes a flat folder left by an interrupted merge.
absl::Status RemoveFlatFolder(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return absl::InternalError(absl::StrCat(dir, ": ", std::strerror(errno)));
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    if (::unlink(path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat(path, ": cannot remove: ", std::strerror(errno)));
    }
  }
  if (::rmdir(dir.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(dir, ": cannot remove: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}


absl::Status SyncFolder(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return absl::InternalError(absl::StrCat(dir, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat(dir, ": fsync: ", std::strerror(errno)));
  return absl::OkStatus();
}


std::string ParentOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::Status WriteMergedConfig(const std::string& path, bool quantize_nf4, const std::string& tmp) {
  auto text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  nlohmann::ordered_json config =
      nlohmann::ordered_json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  config["torch_dtype"] = "bfloat16";
  if (config.contains("dtype")) config["dtype"] = "bfloat16";
  config.erase("quantization_config");
  if (quantize_nf4) {
    config["quantization_config"] = {
        {"quant_method", "bitsandbytes"},
        {"load_in_4bit", true},
        {"load_in_8bit", false},
        {"bnb_4bit_quant_type", "nf4"},
        {"bnb_4bit_use_double_quant", true},
        {"bnb_4bit_compute_dtype", "bfloat16"},
        {"bnb_4bit_quant_storage", "uint8"},
        {"llm_int8_threshold", 6.0},
        {"llm_int8_has_fp16_weight", false},
        {"llm_int8_skip_modules", nullptr},
        {"llm_int8_enable_fp32_cpu_offload", false},
    };
  }
  return model::WriteFileAtomically(tmp + "/config.json", config.dump(2) + "\n");
}

absl::Status CopyModelFiles(const std::string& base_dir, const std::string& tmp) {
  for (const char* name : kCopiedFiles) {
    const std::string from = base_dir + "/" + name;
    if (!PathExists(from)) continue;
    auto text = ReadTextFile(from);
    if (!text.ok()) return text.status();
    if (auto s = model::WriteFileAtomically(tmp + "/" + name, *text); !s.ok()) return s;
  }
  return absl::OkStatus();
}

int64_t ShardWriter::HeaderRoom(const std::vector<std::string>& names) {
  // Per entry: the quoted name, dtype, up to 8 dimensions and two offsets of
  // 20 digits each, and punctuation; plus the metadata.
  int64_t room = 128;
  for (const std::string& name : names) room += static_cast<int64_t>(name.size()) + 256;
  return (room + 7) / 8 * 8;
}

absl::StatusOr<ShardWriter> ShardWriter::Create(const std::string& path, int64_t header_room) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(path, "open");
  if (::lseek(fd, 8 + header_room, SEEK_SET) < 0) {
    absl::Status s = Errno(path, "lseek");
    ::close(fd);
    return s;
  }
  ShardWriter writer(path, fd, header_room);
  writer.header_["__metadata__"] = {{"format", "pt"}};
  return absl::StatusOr<ShardWriter>(std::move(writer));
}

ShardWriter::ShardWriter(ShardWriter&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      header_room_(other.header_room_),
      offset_(other.offset_),
      header_(std::move(other.header_)) {}

ShardWriter::~ShardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ShardWriter::Append(const std::string& name, const at::Tensor& tensor) {
  auto dtype = DtypeName(tensor.scalar_type());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor \"", name, "\": ", dtype.status().message()));
  }
  at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  const uint64_t bytes = t.nbytes();
  header_[name] = {
      {"dtype", *dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset_, offset_ + bytes}}};
  offset_ += bytes;
  return WriteAll(fd_, static_cast<const char*>(t.data_ptr()), bytes, path_);
}

absl::StatusOr<int64_t> ShardWriter::Finish() {
  std::string head = header_.dump();
  if (static_cast<int64_t>(head.size()) > header_room_) {
    return absl::InternalError(absl::StrCat(path_, ": header of ", head.size(),
                                            " bytes exceeds the ", header_room_, " reserved"));
  }
  head.append(static_cast<size_t>(header_room_) - head.size(), ' ');
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((head.size() >> (8 * i)) & 0xFF);
  if (::lseek(fd_, 0, SEEK_SET) < 0) return Errno(path_, "lseek");
  if (auto s = WriteAll(fd_, len.data(), len.size(), path_); !s.ok()) return s;
  if (auto s = WriteAll(fd_, head.data(), head.size(), path_); !s.ok()) return s;
  if (::fsync(fd_) != 0) return Errno(path_, "fsync");
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) return Errno(path_, "close");
  return static_cast<int64_t>(offset_);
}

}  // namespace rigtune::train
