// Hqq4Tensor: shapes, packing and errors (equality with the hqq package
// itself is tests/golden/test_base_types.py), and the kernels' CPU twin
// (kernels/hqq4.h) against DequantizeInto, so the CUDA kernel checked against
// that twin (tests/gpu/hqq4_cuda_test.cc) gives hqq's bits too.
#include "worker/quant/hqq4_tensor.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/hqq4.h"

namespace rigtune::quant {
namespace {

TEST(Hqq4TensorTest, RoundTripStaysWithinHalfAStepPerGroup) {
  at::manual_seed(3);
  const at::Tensor w = at::randn({96, 128}) * 0.05;
  auto q = Hqq4Tensor::Quantize(w);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->groups(), 96 * 128 / 64);
  EXPECT_EQ(q->packed().sizes(), (at::IntArrayRef{96, 64}));
  auto d = q->Dequantize(at::kFloat);
  ASSERT_TRUE(d.ok()) << d.status();
  // The solver moves zero off the min/max fit, so allow more than half
  // a quantization step (scale) per element of its group (codes clip at 0, 15).
  const at::Tensor err = (*d - w).abs().reshape({-1, 64}).amax(1);
  EXPECT_TRUE(err.le(q->scale().abs() * 2.5).all().item<bool>());
  const at::Tensor codes = q->Codes();
  EXPECT_EQ(codes.sizes(), (at::IntArrayRef{192, 64}));
  EXPECT_LE(codes.max().item<int>(), 15);
  // hqq's packing: the first half of the groups in the high nibble.
  EXPECT_TRUE(q->packed().bitwise_right_shift(4).equal(codes.narrow(0, 0, 96)));
}

TEST(Hqq4TensorTest, FromPartsRebuildsTheSameWeight) {
  at::manual_seed(4);
  auto q = Hqq4Tensor::Quantize(at::randn({32, 64}));
  ASSERT_TRUE(q.ok());
  auto r = Hqq4Tensor::FromParts({32, 64}, q->packed().reshape({-1}).clone(), q->scale().clone(),
                                 q->zero().clone());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->Dequantize(at::kFloat)->equal(*q->Dequantize(at::kFloat)));
  EXPECT_FALSE(Hqq4Tensor::FromParts({32, 64}, q->packed(), q->scale().narrow(0, 0, 4),
                                     q->zero())
                   .ok());
}

TEST(Hqq4TensorTest, KernelTwinGivesTheBitsOfDequantizeInto) {
  // [3, 128]: three groups per half (an odd count); [40, 96]: groups that
  // straddle rows; the 17 x 384 one starts each half mid-row.
  const std::vector<std::vector<int64_t>> shapes = {{3, 128}, {40, 96}, {17, 384}, {1, 128}};
  at::manual_seed(7);
  for (const auto& shape : shapes) {
    auto q = Hqq4Tensor::Quantize(at::randn(shape) * 0.02);
    ASSERT_TRUE(q.ok()) << q.status();
    const struct {
      at::ScalarType dtype;
      kernels::FloatFormat fmt;
    } outs[] = {{at::kFloat, kernels::FloatFormat::kFloat32},
                {at::kBFloat16, kernels::FloatFormat::kBFloat16},
                {at::kHalf, kernels::FloatFormat::kFloat16}};
    for (const auto& o : outs) {
      SCOPED_TRACE(testing::Message()
                   << shape[0] << "x" << shape[1] << " " << c10::toString(o.dtype));
      auto ref = q->Dequantize(o.dtype);
      ASSERT_TRUE(ref.ok()) << ref.status();
      at::Tensor got = at::empty(shape, at::TensorOptions().dtype(o.dtype));
      kernels::Hqq4DequantizeCpu(q->packed().data_ptr<uint8_t>(), q->scale().data_ptr<float>(),
                                 q->zero().data_ptr<float>(), q->numel(), o.fmt, got.data_ptr());
      ASSERT_EQ(got.nbytes(), ref->nbytes());
      EXPECT_EQ(0, std::memcmp(got.data_ptr(), ref->data_ptr(), got.nbytes()));
    }
  }
}

TEST(Hqq4TensorTest, RejectsSizesThatDoNotPack) {
  auto q = Hqq4Tensor::Quantize(at::randn({3, 64}));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Hqq4Tensor::Quantize(at::zeros({4, 64}, at::kInt)).ok());
}

}  // namespace
}  // namespace rigtune::quant
