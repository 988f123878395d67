// The CUDA NF4 kernels must produce the CPU reference's bits (kernels/nf4.h),
// directly and through Nf4Tensor. Skipped without a CUDA device or build.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/nf4.h"
#include "tests/gpu/kernel_bytes.h"
#include "tests/gpu/skip_without_cuda.h"
#include "worker/quant/nf4_tensor.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace rigtune {
namespace {

at::Tensor HeavyTailed(int64_t n, at::ScalarType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> dist(2.0f);
  at::Tensor t = at::empty({n}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = 0.01f * dist(rng);
  if (n > 200) t.narrow(0, 64, 128).zero_();  // two all-zero blocks
  return t.to(dtype);
}

using gpu_testing::ExpectSameBytes;

#ifdef RIGTUNE_WITH_CUDA
using kernels::FloatFormat;

using gpu_testing::FormatOf;
using gpu_testing::Stream;

// One size and dtype through every kernel, compared with the CPU reference.
// `shift` offsets the device buffers by that many elements / bytes so the
// unaligned (element-wise) path runs too.
void CheckKernels(int64_t n, at::ScalarType dtype, int64_t shift) {
  SCOPED_TRACE(testing::Message() << "n=" << n << " dtype=" << c10::toString(dtype)
                                  << " shift=" << shift);
  const FloatFormat fmt = FormatOf(dtype);
  const at::Tensor x = HeavyTailed(n, dtype, static_cast<uint32_t>(n));
  const int64_t nb = kernels::Nf4NumBlocks(n), nn = kernels::Nf4NumNestedBlocks(nb);
  const auto u8 = at::TensorOptions().dtype(at::kByte);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor packed = at::empty({kernels::Nf4PackedBytes(n)}, u8), absmax = at::empty({nb}, f32);
  kernels::Nf4QuantizeCpu(x.data_ptr(), fmt, n, packed.data_ptr<uint8_t>(),
                          absmax.data_ptr<float>());
  at::Tensor q8 = at::empty({nb}, u8), absmax2 = at::empty({nn}, f32);
  const float* map8 = kernels::DynamicMap8().data();
  const float offset = kernels::Nf4DoubleQuantCpu(
      absmax.data_ptr<float>(), nb, map8, q8.data_ptr<uint8_t>(), absmax2.data_ptr<float>());

  const at::Device cuda(at::kCUDA);
  const at::Tensor dx = at::cat({at::zeros({shift}, x.options()), x}).to(cuda).narrow(0, shift, n);
  at::Tensor dpacked =
      at::empty({packed.numel() + shift}, u8.device(cuda)).narrow(0, shift, packed.numel());
  at::Tensor dabsmax = at::empty({nb}, f32.device(cuda));
  ASSERT_EQ(kernels::Nf4QuantizeCuda(dx.data_ptr(), fmt, n, dpacked.data_ptr<uint8_t>(),
                                     dabsmax.data_ptr<float>(), Stream()),
            cudaSuccess);
  ExpectSameBytes(dpacked, packed, "packed");
  ExpectSameBytes(dabsmax, absmax, "absmax");

  at::Tensor dq8 = at::empty({nb}, u8.device(cuda)), dabsmax2 = at::empty({nn}, f32.device(cuda));
  at::Tensor doffset = at::empty({1}, f32.device(cuda));
  const at::Tensor dmap8 = at::from_blob(const_cast<float*>(map8), {256}, f32).to(cuda);
  ASSERT_EQ(kernels::Nf4DoubleQuantCuda(dabsmax.data_ptr<float>(), nb, dmap8.data_ptr<float>(),
                                        dq8.data_ptr<uint8_t>(), dabsmax2.data_ptr<float>(),
                                        doffset.data_ptr<float>(), Stream()),
            cudaSuccess);
  EXPECT_EQ(doffset.item<float>(), offset);
  ExpectSameBytes(dq8, q8, "nested codes");
  ExpectSameBytes(dabsmax2, absmax2, "nested absmax");

  for (at::ScalarType out_dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const FloatFormat out_fmt = FormatOf(out_dtype);
    at::Tensor ref = at::empty({n}, out_dtype), ref_nested = at::empty({n}, out_dtype);
    kernels::Nf4DequantizeCpu(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), n, out_fmt,
                              ref.data_ptr());
    kernels::Nf4DequantizeNestedCpu(packed.data_ptr<uint8_t>(), q8.data_ptr<uint8_t>(),
                                    absmax2.data_ptr<float>(), map8, offset, n, out_fmt,
                                    ref_nested.data_ptr());
    at::Tensor out = at::empty({n + shift}, at::TensorOptions().dtype(out_dtype).device(cuda))
                         .narrow(0, shift, n);
    ASSERT_EQ(kernels::Nf4DequantizeCuda(dpacked.data_ptr<uint8_t>(), dabsmax.data_ptr<float>(), n,
                                         out_fmt, out.data_ptr(), Stream()),
              cudaSuccess);
    ExpectSameBytes(out, ref, "dequantized");
    ASSERT_EQ(kernels::Nf4DequantizeNestedCuda(dpacked.data_ptr<uint8_t>(), dq8.data_ptr<uint8_t>(),
                                               dabsmax2.data_ptr<float>(), dmap8.data_ptr<float>(),
                                               offset, n, out_fmt, out.data_ptr(), Stream()),
              cudaSuccess);
    ExpectSameBytes(out, ref_nested, "dequantized (nested)");
  }
}
#endif  // RIGTUNE_WITH_CUDA

TEST(Nf4Cuda, KernelsMatchTheCpuReference) {
  SKIP_WITHOUT_CUDA();
#ifdef RIGTUNE_WITH_CUDA
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (int64_t n : {int64_t{1}, int64_t{63}, int64_t{64}, int64_t{64 * 257 + 33},
                      int64_t{4096 * 4096}, int64_t{64 * 300001 + 7}}) {
      CheckKernels(n, dtype, /*shift=*/0);
    }
  }
#endif
}

TEST(Nf4Cuda, UnalignedBuffersTakeTheElementPathAndStillMatch) {
  SKIP_WITHOUT_CUDA();
#ifdef RIGTUNE_WITH_CUDA
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) CheckKernels(64 * 99 + 5, dtype, 3);
#endif
}

TEST(Nf4Cuda, Nf4TensorOnCudaMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor w = HeavyTailed(1024 * 3000 + 77, dtype, 5).view({-1, 1});
    for (bool nested : {true, false}) {
      quant::Nf4QuantizeOptions options;
      options.double_quant = nested;
      auto cpu = quant::Nf4Tensor::Quantize(w, options);
      auto gpu = quant::Nf4Tensor::Quantize(w.to(at::kCUDA), options);
      ASSERT_TRUE(cpu.ok() && gpu.ok());
      EXPECT_TRUE(gpu->device().is_cuda());
      ExpectSameBytes(gpu->packed(), cpu->packed(), "packed");
      ExpectSameBytes(gpu->absmax(), cpu->absmax(), "absmax");
      EXPECT_EQ(gpu->nested_offset(), cpu->nested_offset());
      if (nested) ExpectSameBytes(gpu->nested_absmax(), cpu->nested_absmax(), "nested absmax");
      at::Tensor out = at::empty(w.sizes(), w.options().device(at::kCUDA).dtype(at::kBFloat16));
      void* before = out.data_ptr();
      ASSERT_TRUE(gpu->DequantizeInto(out).ok());
      EXPECT_EQ(out.data_ptr(), before);
      auto ref = cpu->Dequantize(at::kBFloat16);
      ASSERT_TRUE(ref.ok());
      ExpectSameBytes(out, *ref, "DequantizeInto on CUDA");
      // A CPU-quantized weight moved to the GPU dequantizes to the same bits.
      at::Tensor moved = at::empty_like(out);
      ASSERT_TRUE(cpu->To(at::kCUDA).DequantizeInto(moved).ok());
      ExpectSameBytes(moved, *ref, "To(CUDA) then DequantizeInto");
    }
  }
}

}  // namespace
}  // namespace rigtune
