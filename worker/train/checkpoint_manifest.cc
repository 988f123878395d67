#include "worker/train/checkpoint_manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace rigtune::train {
namespace {

uint32_t Crc32(const std::string& bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  size_t done = 0;
  while (done < bytes.size()) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(bytes.size() - done, 1u << 30));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + done), chunk);
    done += chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::string Hex32(uint32_t v) { return absl::StrFormat("%08x", v); }

absl::Status DataLoss(const std::string& dir, const std::string& file, const std::string& why) {
  return absl::DataLossError(
      absl::StrCat("checkpoint ", dir, ": ", file, ": ", why, "; this checkpoint is not loaded"));
}

}  // namespace

absl::StatusOr<std::string> MakeManifest(const std::string& dir, int64_t step,
                                         const std::vector<std::string>& files) {
  nlohmann::json list = nlohmann::json::array();
  for (const std::string& name : files) {
    auto bytes = ReadWholeFile(dir + "/" + name);
    if (!bytes.ok()) return bytes.status();
    list.push_back({{"name", name}, {"bytes", bytes->size()}, {"crc32", Hex32(Crc32(*bytes))}});
  }
  return nlohmann::json{
      {"format", "rigtune-checkpoint"}, {"version", 1}, {"step", step}, {"files", list}}
      .dump(2);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InternalError(absl::StrCat(path, ": open: ", std::strerror(errno)));
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = absl::InternalError(absl::StrCat(path, ": read: ", std::strerror(errno)));
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}


absl::Status VerifyCheckpoint(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", dir, ": no such folder"));
  }
  auto text = ReadWholeFile(dir + "/" + kManifest);
  if (!text.ok()) {
    return DataLoss(dir, kManifest,
                    absl::IsNotFound(text.status()) ? "missing (the write did not finish)"
                                                    : std::string(text.status().message()));
  }
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("files") || !j["files"].is_array()) {
    return DataLoss(dir, kManifest, "not a valid manifest");
  }
  std::vector<std::string> listed;
  for (const nlohmann::json& f : j["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("bytes") ||
        !f["bytes"].is_number_unsigned() || !f.contains("crc32") || !f["crc32"].is_string()) {
      return DataLoss(dir, kManifest, "malformed file entry");
    }
    const std::string name = f["name"].get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos) {
      return DataLoss(dir, kManifest, absl::StrCat("bad file name '", name, "'"));
    }
    listed.push_back(name);
    auto bytes = ReadWholeFile(dir + "/" + name);
    if (!bytes.ok()) {
      return DataLoss(
          dir, name,
          absl::IsNotFound(bytes.status()) ? "missing" : std::string(bytes.status().message()));
    }
    const uint64_t want = f["bytes"].get<uint64_t>();
    if (bytes->size() != want) {
      return DataLoss(dir, name,
                      absl::StrCat(bytes->size() < want ? "truncated: " : "size mismatch: ",
                                   bytes->size(), " bytes, the manifest says ", want));
    }
    const std::string crc = Hex32(Crc32(*bytes));
    if (crc != f["crc32"].get<std::string>()) {
      return DataLoss(dir, name,
                      absl::StrCat("CRC-32 mismatch (corrupt): ", crc, ", the manifest says ",
                                   f["crc32"].get<std::string>()));
    }
  }
  for (const char* required : {kAdapter, kAdapterConfig, kOptimizer, kTrainerState}) {
    if (std::find(listed.begin(), listed.end(), required) == listed.end()) {
      return DataLoss(dir, required, "not listed in manifest.json");
    }
  }
  return absl::OkStatus();
}

}  // namespace rigtune::train
