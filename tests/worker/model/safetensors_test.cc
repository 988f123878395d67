#include "worker/model/safetensors.h"

#include <ATen/ATen.h>
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace rigtune::model {
namespace {

using ::testing::HasSubstr;

// POSIX helpers: std::filesystem calls can bind to LibTorch's exported copies.
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  return names;
}

int64_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/rigtune_safetensors_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& name : ListDir(dir_)) ::unlink(Path(name).c_str());
    ::rmdir(dir_.c_str());
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  static std::map<std::string, at::Tensor> Sample() {
    at::manual_seed(0);
    return {{"w.bf16", at::randn({5, 3}).to(at::kBFloat16)},
            {"w.f32", at::randn({4, 2, 3})},
            {"ids", at::arange(7, at::kLong)},
            {"bytes", at::arange(10, at::kByte)},
            {"scalar", at::scalar_tensor(2.5, at::kDouble)},
            {"empty", at::empty({0, 4}, at::kHalf)}};
  }

  std::string dir_;
};

TEST_F(SafetensorsTest, WriteThenReadRoundTrips) {
  const auto tensors = Sample();
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), tensors, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->Names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    auto got = f->Read(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got->sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(*got, t)) << name;
  }
}

TEST_F(SafetensorsTest, DataStartsEightByteAligned) {
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), Sample()).ok());
  std::ifstream in(Path("a.safetensors"), std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ(header_len % 8, 0u);
}

TEST_F(SafetensorsTest, ReadRowsCopiesOnlyTheSlice) {
  const auto tensors = Sample();
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), tensors).ok());
  auto f = SafetensorsFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(f.ok());
  auto rows = f->ReadRows("w.f32", 1, 3);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(at::equal(*rows, tensors.at("w.f32").slice(0, 1, 3)));
  auto none = f->ReadRows("w.bf16", 2, 2);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->sizes(), (at::IntArrayRef{0, 3}));
  auto bad = f->ReadRows("w.f32", 2, 5);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("w.f32"));
  EXPECT_EQ(f->ReadRows("scalar", 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SafetensorsTest, MissingTensorAndFileAreNamed) {
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), Sample()).ok());
  auto f = SafetensorsFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(f.ok());
  auto r = f->Read("nope");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("a.safetensors"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("\"nope\""));
  auto missing = SafetensorsFile::Open(Path("missing.safetensors"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("missing.safetensors"));
}

TEST_F(SafetensorsTest, TruncatedFileIsDataLoss) {
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), Sample()).ok());
  const int64_t size = FileSize(Path("a.safetensors"));
  ASSERT_EQ(::truncate(Path("a.safetensors").c_str(), size - 5), 0);
  auto f = SafetensorsFile::Open(Path("a.safetensors"));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("a.safetensors"));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("fall outside"));
  ASSERT_EQ(::truncate(Path("a.safetensors").c_str(), 20), 0);  // cut inside the header
  EXPECT_THAT(std::string(SafetensorsFile::Open(Path("a.safetensors")).status().message()),
              HasSubstr("truncated"));
  ASSERT_EQ(::truncate(Path("a.safetensors").c_str(), 3), 0);
  EXPECT_EQ(SafetensorsFile::Open(Path("a.safetensors")).status().code(),
            absl::StatusCode::kDataLoss);
}

void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << std::string(data_bytes, '\0');
}

TEST_F(SafetensorsTest, CorruptHeadersAreRejected) {
  struct Case {
    std::string header;
    std::string message;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {"{not json", "not a JSON object", absl::StatusCode::kDataLoss},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "needs 8",
       absl::StatusCode::kDataLoss},
      {R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", "unsupported dtype",
       absl::StatusCode::kInvalidArgument},
      {R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "non-negative",
       absl::StatusCode::kDataLoss},
      {R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
       "overlap", absl::StatusCode::kDataLoss},
  };
  for (const Case& c : cases) {
    WriteRaw(Path("c.safetensors"), c.header, 16);
    auto f = SafetensorsFile::Open(Path("c.safetensors"));
    EXPECT_EQ(f.status().code(), c.code) << c.header;
    EXPECT_THAT(std::string(f.status().message()), HasSubstr(c.message)) << c.header;
  }
}

TEST_F(SafetensorsTest, ShardedModelFollowsTheIndex) {
  at::manual_seed(1);
  const at::Tensor a = at::randn({4, 4}), b = at::randn({2, 8}).to(at::kBFloat16);
  ASSERT_TRUE(WriteSafetensors(Path("model-00001-of-00002.safetensors"), {{"a", a}}).ok());
  ASSERT_TRUE(WriteSafetensors(Path("model-00002-of-00002.safetensors"), {{"b", b}}).ok());
  ASSERT_TRUE(WriteFileAtomically(Path("model.safetensors.index.json"),
                                  R"({"metadata": {}, "weight_map": {)"
                                  R"("a": "model-00001-of-00002.safetensors", )"
                                  R"("b": "model-00002-of-00002.safetensors"}})")
                  .ok());
  auto m = SafetensorsModel::Open(dir_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(at::equal(*m->Read("a"), a));
  EXPECT_TRUE(at::equal(*m->ReadRows("b", 1, 2), b.slice(0, 1, 2)));
  EXPECT_FALSE(m->Contains("c"));

  ASSERT_TRUE(WriteFileAtomically(Path("model.safetensors.index.json"),
                                  R"({"weight_map": {"c": "model-00001-of-00002.safetensors"}})")
                  .ok());
  auto broken = SafetensorsModel::Open(dir_);
  EXPECT_THAT(std::string(broken.status().message()), HasSubstr("\"c\" is listed in"));
}

TEST_F(SafetensorsTest, SingleFileFolderOpens) {
  ASSERT_TRUE(WriteSafetensors(Path("model.safetensors"), Sample()).ok());
  auto m = SafetensorsModel::Open(dir_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->Contains("ids"));
  EXPECT_EQ(SafetensorsModel::Open(Path("nowhere")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, WritesReplaceAtomicallyAndLeaveNoTempFiles) {
  ASSERT_TRUE(WriteFileAtomically(Path("x.json"), "first").ok());
  ASSERT_TRUE(WriteFileAtomically(Path("x.json"), "second").ok());
  std::ifstream in(Path("x.json"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "second");
  EXPECT_EQ(ListDir(dir_), std::vector<std::string>{"x.json"});
  EXPECT_FALSE(WriteFileAtomically(Path("no/such/dir/x.json"), "x").ok());
}

}  // namespace
}  // namespace rigtune::model
