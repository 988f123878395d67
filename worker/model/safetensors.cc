#include "worker/model/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rigtune::model {
namespace {

// Copies `n` mapped bytes out, then drops the pages from this process's
// mapping: read once, they would otherwise stay resident and count in its
// RSS (a 70B bf16 checkpoint is 140 GB). The page cache keeps them, so a
// second read of the same range only faults them back in.
void CopyOut(void* dst, const uint8_t* src, uint64_t n) {
  std::memcpy(dst, src, n);
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t first = reinterpret_cast<uintptr_t>(src) / page * page;
  const uint64_t last = (reinterpret_cast<uintptr_t>(src) + n + page - 1) / page * page;
  ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// Header JSON larger than this is refused as corrupt (the reference
// implementation uses the same bound).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble},
    {"F32", at::kFloat},
    {"F16", at::kHalf},
    {"BF16", at::kBFloat16},
    {"I64", at::kLong},
    {"I32", at::kInt},
    {"I16", at::kShort},
    {"I8", at::kChar},
    {"U8", at::kByte},
    {"BOOL", at::kBool},
    {"U16", at::kUInt16},
    {"U32", at::kUInt32},
    {"U64", at::kUInt64},
    {"F8_E4M3", at::kFloat8_e4m3fn},
    {"F8_E5M2", at::kFloat8_e5m2},
};

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", name, "\""));
}

absl::StatusOr<std::string> DtypeString(at::ScalarType dtype) {
  for (const auto& d : kDtypes) {
    if (dtype == d.dtype) return std::string(d.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", c10::toString(dtype), " has no safetensors name"));
}

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat(path, ": corrupt safetensors file: ", what));
}

absl::Status Errno(const std::string& path, const char* op) {
  return absl::InternalError(absl::StrCat(path, ": ", op, " failed: ", std::strerror(errno)));
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const nlohmann::json& j, uint64_t data_bytes) {
  const std::string where = absl::StrCat("tensor \"", name, "\": ");
  if (!j.is_object() || !j.contains("dtype") || !j["dtype"].is_string() || !j.contains("shape") ||
      !j["shape"].is_array() || !j.contains("data_offsets") || !j["data_offsets"].is_array() ||
      j["data_offsets"].size() != 2) {
    return Corrupt(path, where + "needs dtype, shape and data_offsets [begin, end]");
  }
  SafetensorsEntry e;
  auto dtype = ParseDtype(j["dtype"].get<std::string>());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", where, dtype.status().message()));
  }
  e.dtype = *dtype;
  uint64_t numel = 1;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_unsigned())
      return Corrupt(path, where + "shape must be non-negative integers");
    e.shape.push_back(d.get<int64_t>());
    numel *= d.get<uint64_t>();
  }
  for (const auto& o : j["data_offsets"]) {
    if (!o.is_number_unsigned()) return Corrupt(path, where + "data_offsets must be non-negative");
  }
  e.begin = j["data_offsets"][0].get<uint64_t>();
  e.end = j["data_offsets"][1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_bytes) {
    return Corrupt(path, absl::StrCat(where, "data_offsets [", e.begin, ", ", e.end,
                                      "] fall outside the ", data_bytes, " data bytes"));
  }
  const uint64_t expected = numel * c10::elementSize(e.dtype);
  if (e.end - e.begin != expected) {
    return Corrupt(path, absl::StrCat(where, "holds ", e.end - e.begin,
                                      " bytes, shape x dtype needs ", expected));
  }
  return e;
}

// POSIX calls rather than std::filesystem: the LibTorch wheels export their
// own copies of some std::filesystem symbols, and calls can bind to those.
bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string Join(const std::string& dir, const std::string& name) {
  return (!dir.empty() && dir.back() == '/') ? dir + name : dir + "/" + name;
}

absl::Status SyncDirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Errno(dir, "open");
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : Errno(dir, "fsync");
}

// Writes the pieces to a temp file beside `path`, fsyncs, renames.
absl::Status WritePiecesAtomically(const std::string& path,
                                   const std::vector<std::string_view>& pieces) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(tmp, "open");
  for (std::string_view piece : pieces) {
    const char* p = piece.data();
    size_t left = piece.size();
    while (left > 0) {
      const ssize_t w = ::write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        absl::Status s = Errno(tmp, "write");
        ::close(fd);
        ::unlink(tmp.c_str());
        return s;
      }
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (::fsync(fd) != 0) {
    absl::Status s = Errno(tmp, "fsync");
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno(path, "rename");
    ::unlink(tmp.c_str());
    return s;
  }
  return SyncDirectoryOf(path);
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, size);
  }
};

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return Errno(path, "open");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    absl::Status s = Errno(path, "stat");
    ::close(fd);
    return s;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Corrupt(path,
                   absl::StrCat("only ", size, " bytes, shorter than the 8-byte header size"));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping->addr == MAP_FAILED) {
    mapping->addr = nullptr;
    return Errno(path, "mmap");
  }
  mapping->size = size;
  const auto* base = static_cast<const uint8_t*>(mapping->addr);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | base[i];
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return Corrupt(path, absl::StrCat("header length ", header_len, " does not fit in the ", size,
                                      "-byte file (truncated?)"));
  }
  const std::string_view header(reinterpret_cast<const char*>(base + 8), header_len);
  const nlohmann::json js = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (js.is_discarded() || !js.is_object()) return Corrupt(path, "header is not a JSON object");

  SafetensorsFile f;
  f.path_ = path;
  f.data_ = base + 8 + header_len;
  const uint64_t data_bytes = size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, value] : js.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Corrupt(path, "__metadata__ must be an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return Corrupt(path, "__metadata__ values must be strings");
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto entry = ParseEntry(path, name, value, data_bytes);
    if (!entry.ok()) return entry.status();
    if (entry->end > entry->begin) spans.emplace_back(entry->begin, entry->end);
    f.entries_.emplace(name, std::move(*entry));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) return Corrupt(path, "tensor data overlap");
  }
  f.mapping_ = std::move(mapping);
  return f;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::StatusOr<at::Tensor> SafetensorsFile::Read(const std::string& name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  at::Tensor t = at::empty(e->shape, at::TensorOptions().dtype(e->dtype));
  if (e->end > e->begin) CopyOut(t.data_ptr(), data_ + e->begin, e->end - e->begin);
  return t;
}

absl::StatusOr<at::Tensor> SafetensorsFile::ReadRows(const std::string& name, int64_t row_begin,
                                                     int64_t row_end) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  if (e->shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor \"", name, "\" is 0-dimensional and has no rows"));
  }
  const int64_t rows = e->shape[0];
  if (row_begin < 0 || row_begin > row_end || row_end > rows) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": tensor \"", name, "\": rows [", row_begin,
                                              ", ", row_end, ") outside [0, ", rows, ")"));
  }
  std::vector<int64_t> shape = e->shape;
  shape[0] = row_end - row_begin;
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(e->dtype));
  const uint64_t row_bytes = rows == 0 ? 0 : (e->end - e->begin) / static_cast<uint64_t>(rows);
  const uint64_t bytes = row_bytes * static_cast<uint64_t>(row_end - row_begin);
  if (bytes > 0) {
    CopyOut(t.data_ptr(), data_ + e->begin + row_bytes * static_cast<uint64_t>(row_begin), bytes);
  }
  return t;
}

absl::StatusOr<SafetensorsModel> SafetensorsModel::Open(const std::string& path) {
  SafetensorsModel m;
  if (!IsDirectory(path)) {
    auto f = SafetensorsFile::Open(path);
    if (!f.ok()) return f.status();
    for (const auto& name : f->Names()) m.index_[name] = 0;
    m.files_.push_back(std::move(*f));
    return m;
  }
  const std::string index_path = Join(path, "model.safetensors.index.json");
  if (!Exists(index_path)) {
    const std::string single = Join(path, "model.safetensors");
    if (!Exists(single)) {
      return absl::NotFoundError(absl::StrCat(
          path, ": neither model.safetensors.index.json nor model.safetensors is there"));
    }
    return Open(single);
  }
  std::string text;
  {
    const int fd = ::open(index_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Errno(index_path, "open");
    char buf[1 << 16];
    ssize_t r;
    while ((r = ::read(fd, buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(r));
    ::close(fd);
    if (r < 0) return Errno(index_path, "read");
  }
  const nlohmann::json js = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (js.is_discarded() || !js.contains("weight_map") || !js["weight_map"].is_object()) {
    return absl::DataLossError(absl::StrCat(index_path, ": not JSON with a \"weight_map\" object"));
  }
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [name, file] : js["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::DataLossError(
          absl::StrCat(index_path, ": weight_map[\"", name, "\"] must be a file name"));
    }
    const std::string shard = file.get<std::string>();
    auto it = shard_of_file.find(shard);
    if (it == shard_of_file.end()) {
      auto f = SafetensorsFile::Open(Join(path, shard));
      if (!f.ok()) return f.status();
      it = shard_of_file.emplace(shard, m.files_.size()).first;
      m.files_.push_back(std::move(*f));
    }
    if (!m.files_[it->second].Contains(name)) {
      return absl::DataLossError(absl::StrCat(index_path, ": tensor \"", name, "\" is listed in ",
                                              shard, " but not stored there"));
    }
    m.index_[name] = it->second;
  }
  return m;
}

std::vector<std::string> SafetensorsModel::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : index_) names.push_back(name);
  return names;
}

const SafetensorsEntry* SafetensorsModel::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : files_[it->second].Find(name);
}

absl::StatusOr<at::Tensor> SafetensorsModel::Read(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat("no tensor \"", name, "\""));
  return files_[it->second].Read(name);
}

absl::StatusOr<at::Tensor> SafetensorsModel::ReadRows(const std::string& name, int64_t row_begin,
                                                      int64_t row_end) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat("no tensor \"", name, "\""));
  return files_[it->second].ReadRows(name, row_begin, row_end);
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"__metadata__\" is reserved"));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", name, "\" is undefined"));
    }
    auto dtype = DtypeString(tensor.scalar_type());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\": ", dtype.status().message()));
    }
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = t.nbytes();
    header[name] = {
        {"dtype", *dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((head.size() >> (8 * i)) & 0xFF);
  std::vector<std::string_view> pieces = {len, head};
  for (const at::Tensor& t : data) {
    pieces.emplace_back(static_cast<const char*>(t.data_ptr()), t.nbytes());
  }
  return WritePiecesAtomically(path, pieces);
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  return WritePiecesAtomically(path, {contents});
}

absl::Status CreateDirectories(const std::string& path) {
  // POSIX rather than std::filesystem: LibTorch's shared libraries carry
  // their own std::filesystem symbols, and mixing the two has crashed.
  std::string prefix;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    prefix = path.substr(0, pos);
    if (prefix.empty()) continue;
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat(prefix, ": cannot create folder: ", std::strerror(errno)));
    }
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InternalError(absl::StrCat(path, ": exists and is not a folder"));
  }
  return absl::OkStatus();
}

}  // namespace rigtune::model
