// The CUDA hqq4 dequantize (kernels/hqq4.h) must produce its CPU twin's bits,
// directly and through Hqq4Tensor. Skipped without a CUDA device or build.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/hqq4.h"
#include "tests/gpu/kernel_bytes.h"
#include "tests/gpu/skip_without_cuda.h"
#include "worker/quant/hqq4_tensor.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace rigtune {
namespace {

using gpu_testing::ExpectSameBytes;

#ifdef RIGTUNE_WITH_CUDA
using kernels::FloatFormat;

using gpu_testing::FormatOf;
using gpu_testing::Stream;

// A device copy of `t` starting `shift` elements past an aligned allocation.
at::Tensor ShiftedOnCuda(const at::Tensor& t, int64_t shift) {
  at::Tensor base = at::empty({t.numel() + shift}, t.options().device(at::kCUDA));
  at::Tensor view = base.narrow(0, shift, t.numel());
  view.copy_(t.reshape({-1}));
  return view;
}

// Random codes (every nibble value), scales of both signs and zeros off the
// integers, so that rounding differences would show. `packed_shift` bytes and
// `out_shift` elements misalign the device buffers (the one-byte path).
void CheckKernel(int64_t n, at::ScalarType dtype, int64_t packed_shift, int64_t out_shift) {
  SCOPED_TRACE(testing::Message() << "n=" << n << " dtype=" << c10::toString(dtype)
                                  << " packed_shift=" << packed_shift
                                  << " out_shift=" << out_shift);
  const int64_t groups = kernels::Hqq4NumGroups(n);
  at::manual_seed(n);
  const at::Tensor packed = at::randint(0, 256, {kernels::Hqq4PackedBytes(n)}, at::kByte);
  const at::Tensor scale = (at::rand({groups}) - 0.3) * 0.01;
  const at::Tensor zero = at::rand({groups}) * 15.0;
  at::Tensor ref = at::empty({n}, at::TensorOptions().dtype(dtype));
  kernels::Hqq4DequantizeCpu(packed.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                             zero.data_ptr<float>(), n, FormatOf(dtype), ref.data_ptr());

  const at::Tensor dpacked = ShiftedOnCuda(packed, packed_shift);
  const at::Tensor dscale = scale.to(at::kCUDA), dzero = zero.to(at::kCUDA);
  at::Tensor out = ShiftedOnCuda(at::full({n}, 7.0, ref.options()), out_shift);
  ASSERT_EQ(kernels::Hqq4DequantizeCuda(dpacked.data_ptr<uint8_t>(), dscale.data_ptr<float>(),
                                        dzero.data_ptr<float>(), n, FormatOf(dtype), out.data_ptr(),
                                        Stream()),
            cudaSuccess);
  ExpectSameBytes(out, ref, "dequantized");
}
#endif  // RIGTUNE_WITH_CUDA

TEST(Hqq4Cuda, KernelMatchesTheCpuTwin) {
  SKIP_WITHOUT_CUDA();
#ifdef RIGTUNE_WITH_CUDA
  // 128: one group per half; 384: three (odd); 64 * 1234: a grid-stride tail;
  // 4096 x 1100: several rounds of every thread's unrolled steps.
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t n : {int64_t{128}, int64_t{384}, int64_t{64 * 1234}, int64_t{4096 * 1100}}) {
      CheckKernel(n, dtype, 0, 0);
    }
  }
#endif
}

TEST(Hqq4Cuda, MisalignedBuffersTakeTheBytePathAndStillMatch) {
  SKIP_WITHOUT_CUDA();
#ifdef RIGTUNE_WITH_CUDA
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    CheckKernel(64 * 98, dtype, /*packed_shift=*/1, /*out_shift=*/0);
    CheckKernel(64 * 98, dtype, /*packed_shift=*/0, /*out_shift=*/1);
    CheckKernel(64 * 98, dtype, /*packed_shift=*/3, /*out_shift=*/5);
    // 8-byte aligned codes and outputs: still not 16, still the byte path.
    CheckKernel(64 * 98, dtype, /*packed_shift=*/8,
                /*out_shift=*/8 / static_cast<int64_t>(c10::elementSize(dtype)));
  }
#endif
}

TEST(Hqq4Cuda, RejectsSizesThatDoNotPack) {
  SKIP_WITHOUT_CUDA();
#ifdef RIGTUNE_WITH_CUDA
  at::Tensor buf = at::zeros({1024}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  auto* p = buf.data_ptr<float>();
  EXPECT_EQ(kernels::Hqq4DequantizeCuda(reinterpret_cast<const uint8_t*>(p), p, p, 192,
                                        FloatFormat::kFloat32, p + 512, Stream()),
            cudaErrorInvalidValue);
  EXPECT_EQ(kernels::Hqq4DequantizeCuda(nullptr, nullptr, nullptr, 0, FloatFormat::kFloat32,
                                        nullptr, Stream()),
            cudaSuccess);
#endif
}

TEST(Hqq4Cuda, Hqq4TensorOnCudaMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(11);
  const at::Tensor w = at::randn({384, 320}) * 0.02;
  auto cpu = quant::Hqq4Tensor::Quantize(w);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const quant::Hqq4Tensor gpu = cpu->To(at::kCUDA);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    auto ref = cpu->Dequantize(dtype);
    ASSERT_TRUE(ref.ok()) << ref.status();
    at::Tensor out = at::empty(w.sizes(), w.options().dtype(dtype).device(at::kCUDA));
    void* before = out.data_ptr();
    ASSERT_TRUE(gpu.DequantizeInto(out).ok());
    EXPECT_EQ(out.data_ptr(), before);
    ExpectSameBytes(out, *ref, "DequantizeInto on CUDA");
  }
  // A non-contiguous output is refused, naming the reason.
  at::Tensor strided =
      at::empty({320, 384}, w.options().dtype(at::kBFloat16).device(at::kCUDA)).t();
  const absl::Status s = gpu.DequantizeInto(strided);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("contiguous"), std::string::npos) << s;
}

}  // namespace
}  // namespace rigtune
