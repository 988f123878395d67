#include "worker/quant/nf4_tensor.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/nf4.h"

namespace rigtune::quant {
namespace {

using ::testing::HasSubstr;

Nf4QuantizeOptions PlainOptions() {
  Nf4QuantizeOptions o;
  o.double_quant = false;
  return o;
}

at::Tensor Weights(std::vector<int64_t> shape, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn(shape) * 0.02).to(dtype);
}

std::string JsonOf(const std::map<std::string, at::Tensor>& sd, const std::string& key) {
  const at::Tensor t = sd.at(key);
  return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
}

TEST(Nf4Tensor, QuantizeMatchesTheKernelReference) {
  const at::Tensor w = Weights({48, 70}, at::kBFloat16, 1);
  auto q = Nf4Tensor::Quantize(w, PlainOptions());
  ASSERT_TRUE(q.ok()) << q.status();
  const int64_t n = w.numel();
  std::vector<uint8_t> packed(kernels::Nf4PackedBytes(n));
  std::vector<float> absmax(kernels::Nf4NumBlocks(n));
  kernels::Nf4QuantizeCpu(w.data_ptr(), kernels::FloatFormat::kBFloat16, n, packed.data(),
                          absmax.data());
  ASSERT_EQ(q->packed().numel(), static_cast<int64_t>(packed.size()));
  EXPECT_EQ(0, std::memcmp(q->packed().data_ptr<uint8_t>(), packed.data(), packed.size()));
  EXPECT_EQ(0, std::memcmp(q->absmax().data_ptr<float>(), absmax.data(), absmax.size() * 4));
  EXPECT_FALSE(q->double_quant());
  EXPECT_EQ(q->shape(), (std::vector<int64_t>{48, 70}));
  EXPECT_EQ(q->dtype(), at::kBFloat16);
}

// The CPU path splits work into chunks of 256 blocks; a tensor spanning
// several chunks plus a partial block must equal one unsplit kernel call.
TEST(Nf4Tensor, ChunkedCpuWorkEqualsOneKernelCall) {
  const int64_t n = 3 * 64 * 256 + 77;
  const at::Tensor w = Weights({n}, at::kFloat, 2);
  auto q = Nf4Tensor::Quantize(w);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<uint8_t> packed(kernels::Nf4PackedBytes(n));
  std::vector<float> absmax(kernels::Nf4NumBlocks(n));
  kernels::Nf4QuantizeCpu(w.data_ptr(), kernels::FloatFormat::kFloat32, n, packed.data(),
                          absmax.data());
  EXPECT_EQ(0, std::memcmp(q->packed().data_ptr<uint8_t>(), packed.data(), packed.size()));
  std::vector<uint8_t> q8(absmax.size());
  std::vector<float> absmax2(kernels::Nf4NumNestedBlocks(absmax.size()));
  const float offset = kernels::Nf4DoubleQuantCpu(
      absmax.data(), absmax.size(), kernels::DynamicMap8().data(), q8.data(), absmax2.data());
  EXPECT_EQ(q->nested_offset(), offset);
  EXPECT_EQ(0, std::memcmp(q->absmax().data_ptr<uint8_t>(), q8.data(), q8.size()));
  std::vector<float> out(n);
  kernels::Nf4DequantizeNestedCpu(packed.data(), q8.data(), absmax2.data(),
                                  kernels::DynamicMap8().data(), offset, n,
                                  kernels::FloatFormat::kFloat32, out.data());
  auto deq = q->Dequantize(at::kFloat);
  ASSERT_TRUE(deq.ok()) << deq.status();
  EXPECT_EQ(0, std::memcmp(deq->data_ptr<float>(), out.data(), n * 4));
}

TEST(Nf4Tensor, DequantizeIntoReusesTheCallersBuffer) {
  auto q = Nf4Tensor::Quantize(Weights({64, 64}, at::kHalf, 3));
  ASSERT_TRUE(q.ok()) << q.status();
  at::Tensor buf = at::full({64, 64}, 7.0, at::kBFloat16);
  void* before = buf.data_ptr();
  ASSERT_TRUE(q->DequantizeInto(buf).ok());
  EXPECT_EQ(buf.data_ptr(), before);
  auto fresh = q->Dequantize(at::kBFloat16);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(at::equal(buf, *fresh));
  EXPECT_LT((fresh->to(at::kFloat) - Weights({64, 64}, at::kHalf, 3).to(at::kFloat))
                .abs()
                .max()
                .item<float>(),
            0.02f);
}

TEST(Nf4Tensor, RejectsBadInputWithNamedErrors) {
  EXPECT_THAT(std::string(Nf4Tensor::Quantize(at::ones({4, 64}, at::kInt)).status().message()),
              HasSubstr("float32, float16 or bfloat16"));
  EXPECT_THAT(std::string(Nf4Tensor::Quantize(at::ones({0, 64})).status().message()),
              HasSubstr("empty"));
  at::Tensor nan = at::ones({64});
  nan[3] = std::nanf("");
  EXPECT_THAT(std::string(Nf4Tensor::Quantize(nan).status().message()), HasSubstr("NaN"));
  EXPECT_EQ(Nf4Tensor::Quantize(at::Tensor()).status().code(), absl::StatusCode::kInvalidArgument);

  auto q = Nf4Tensor::Quantize(Weights({8, 64}, at::kFloat, 4));
  ASSERT_TRUE(q.ok());
  at::Tensor small = at::empty({8, 63});
  EXPECT_THAT(std::string(q->DequantizeInto(small).message()), HasSubstr("504 elements"));
  at::Tensor ints = at::empty({8, 64}, at::kInt);
  EXPECT_FALSE(q->DequantizeInto(ints).ok());
  at::Tensor strided = at::empty({64, 8}).t();
  EXPECT_THAT(std::string(q->DequantizeInto(strided).message()), HasSubstr("contiguous"));
}

TEST(Nf4Tensor, FromPartsChecksSizes) {
  auto q = Nf4Tensor::Quantize(Weights({4, 100}, at::kFloat, 5));
  ASSERT_TRUE(q.ok());
  auto ok = Nf4Tensor::FromParts(q->shape(), at::kFloat, q->packed(), q->absmax(),
                                 q->nested_absmax(), q->nested_offset());
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto bad = Nf4Tensor::FromParts({4, 101}, at::kFloat, q->packed(), q->absmax(),
                                  q->nested_absmax(), q->nested_offset());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("packed must have 202 elements"));
  auto bad_nested = Nf4Tensor::FromParts(q->shape(), at::kFloat, q->packed(), q->absmax(),
                                         at::zeros({3}), q->nested_offset());
  EXPECT_THAT(std::string(bad_nested.status().message()), HasSubstr("nested_absmax"));
}

TEST(Nf4Tensor, StateDictUsesBitsandbytesKeysAndJson) {
  auto q = Nf4Tensor::Quantize(Weights({3, 70}, at::kBFloat16, 6));
  ASSERT_TRUE(q.ok());
  const auto sd = q->ToStateDict("model.layers.0.mlp.up_proj");
  const std::string w = "model.layers.0.mlp.up_proj.weight";
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{w, w + ".absmax", w + ".nested_absmax",
                                            w + ".nested_quant_map", w + ".quant_map",
                                            w + ".quant_state.bitsandbytes__nf4"}));
  EXPECT_EQ(sd.at(w).sizes(), (at::IntArrayRef{105, 1}));
  EXPECT_EQ(sd.at(w + ".absmax").scalar_type(), at::kByte);
  const std::string json = JsonOf(sd, w + ".quant_state.bitsandbytes__nf4");
  EXPECT_THAT(json, HasSubstr("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
                              "\"bfloat16\", \"shape\": [3, 70], \"nested_blocksize\": 256, "
                              "\"nested_dtype\": \"float32\", \"nested_offset\": "));
  auto back = Nf4Tensor::FromStateDict(sd, "model.layers.0.mlp.up_proj");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(at::equal(*back->Dequantize(at::kFloat), *q->Dequantize(at::kFloat)));
  EXPECT_EQ(back->nested_offset(), q->nested_offset());
  EXPECT_EQ(back->dtype(), at::kBFloat16);
}

// Python's repr() of the float32 offset, as json.dumps writes it.
TEST(Nf4Tensor, NestedOffsetIsPrintedLikePythonRepr) {
  auto q = Nf4Tensor::Quantize(Weights({64}, at::kFloat, 7));
  ASSERT_TRUE(q.ok());
  for (auto [offset, text] : {std::pair<float, const char*>{1e-5f, "9.999999747378752e-06"},
                              {0.125f, "0.125"},
                              {3.0f, "3.0"},
                              {0.0001f, "9.999999747378752e-05"},
                              {-0.015625f, "-0.015625"},
                              {0.0f, "0.0"}}) {
    auto t = Nf4Tensor::FromParts(q->shape(), at::kFloat, q->packed(), q->absmax(),
                                  q->nested_absmax(), offset);
    ASSERT_TRUE(t.ok());
    const std::string json = JsonOf(t->ToStateDict(""), "weight.quant_state.bitsandbytes__nf4");
    EXPECT_THAT(json, HasSubstr(std::string("\"nested_offset\": ") + text + "}")) << json;
  }
}

TEST(Nf4Tensor, PlainStateDictHasFloatAbsmaxAndNoNestedKeys) {
  auto q = Nf4Tensor::Quantize(Weights({2, 64}, at::kHalf, 8), PlainOptions());
  ASSERT_TRUE(q.ok());
  const auto sd = q->ToStateDict("");
  EXPECT_EQ(sd.size(), 4u);
  EXPECT_EQ(sd.at("weight.absmax").scalar_type(), at::kFloat);
  EXPECT_EQ(JsonOf(sd, "weight.quant_state.bitsandbytes__nf4"),
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": "
            "[2, 64]}");
  auto back = Nf4Tensor::FromStateDict(sd, "");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->double_quant());
}

TEST(Nf4Tensor, FromStateDictNamesWhatIsWrong) {
  auto q = Nf4Tensor::Quantize(Weights({4, 64}, at::kFloat, 9));
  ASSERT_TRUE(q.ok());
  const auto good = q->ToStateDict("p");
  auto expect_error = [](const std::map<std::string, at::Tensor>& sd, const std::string& part) {
    auto r = Nf4Tensor::FromStateDict(sd, "p");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(part));
  };
  auto missing = good;
  missing.erase("p.weight.absmax");
  expect_error(missing, "missing tensor \"p.weight.absmax\"");
  auto truncated = good;
  truncated["p.weight"] = good.at("p.weight").narrow(0, 0, 100);
  expect_error(truncated, "packed must have 128 elements, got 100");
  auto short_nested = good;
  short_nested["p.weight.nested_absmax"] = at::zeros({0});
  expect_error(short_nested, "nested_absmax must have 1 elements");
  auto bad_json = good;
  bad_json["p.weight.quant_state.bitsandbytes__nf4"] = at::full({5}, 'x', at::kByte);
  expect_error(bad_json, "not valid JSON");
  auto fp4 = good;
  fp4.erase("p.weight.quant_state.bitsandbytes__nf4");
  fp4["p.weight.quant_state.bitsandbytes__fp4"] = good.at("p.weight.quant_state.bitsandbytes__nf4");
  expect_error(fp4, "FP4");
  auto wrong_map = good;
  wrong_map["p.weight.quant_map"] = at::zeros({16});
  expect_error(wrong_map, "not the NF4 code table");
}

}  // namespace
}  // namespace rigtune::quant
