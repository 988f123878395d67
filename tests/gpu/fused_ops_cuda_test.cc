// The CUDA kernels behind worker/model/fused_ops.h against their CPU twins
// (the same autograd functions on CPU tensors) and against transformers'
// formulas: values and input gradients, float32 tightly, bf16/fp16 within
// their rounding, odd shapes, non-contiguous inputs and more rows than one
// grid dimension holds. Skipped without a CUDA device or build.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "tests/gpu/skip_without_cuda.h"
#include "tests/worker/model/fused_ops_reference.h"
#include "worker/model/fused_ops.h"

namespace rigtune::model {
namespace {

using testing::RelErr;
using testing::RunForwardBackward;

// CUDA vs the CPU twin: float32 differs only in summation order and
// contraction; 16-bit formats by at most a rounding step here and there.
double TwinTolerance(at::ScalarType dtype) { return dtype == at::kFloat ? 2e-6 : 8e-3; }
// Either side vs the ATen formulas (which round differently in 16 bits).
double ReferenceTolerance(at::ScalarType dtype) { return dtype == at::kFloat ? 2e-6 : 2e-2; }

const at::ScalarType kDtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};

at::Tensor Cuda(const at::Tensor& t) { return t.to(at::kCUDA); }

// Runs `op` on CPU copies and on CUDA copies of `inputs` (the CUDA ones made
// non-contiguous when `transpose_inputs`), and checks outputs and gradients
// against each other and against `reference` on the CPU.
void CheckTwins(const std::function<at::Tensor(std::vector<at::Tensor>&)>& op,
                const std::function<at::Tensor(std::vector<at::Tensor>&)>& reference,
                const std::vector<at::Tensor>& inputs, const at::Tensor& grad_out,
                bool transpose_inputs = false) {
  const at::ScalarType dtype = grad_out.scalar_type();
  SCOPED_TRACE(::testing::Message()
               << "dtype=" << c10::toString(dtype) << " shape=" << grad_out.sizes());
  auto cpu = RunForwardBackward(op, inputs, grad_out);
  auto ref = RunForwardBackward(reference, inputs, grad_out);
  std::vector<at::Tensor> device_inputs;
  for (const at::Tensor& t : inputs) {
    device_inputs.push_back(transpose_inputs ? Cuda(t.transpose(0, 1).contiguous()).transpose(0, 1)
                                             : Cuda(t));
    if (transpose_inputs) {
      ASSERT_FALSE(device_inputs.back().is_contiguous());
    }
  }
  auto gpu = RunForwardBackward(op, device_inputs, Cuda(grad_out));
  EXPECT_LT(RelErr(gpu.out, cpu.out), TwinTolerance(dtype));
  EXPECT_LT(RelErr(gpu.out, ref.out), ReferenceTolerance(dtype));
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_LT(RelErr(gpu.grads[i], cpu.grads[i]), TwinTolerance(dtype)) << "grad " << i;
    EXPECT_LT(RelErr(gpu.grads[i], ref.grads[i]), ReferenceTolerance(dtype)) << "grad " << i;
  }
}

TEST(FusedOpsCuda, RmsNormMatchesCpuTwin) {
  SKIP_WITHOUT_CUDA();
  struct Shape {
    int64_t rows, cols;
  };
  for (const Shape s : {Shape{37, 1000}, Shape{4, 4096}, Shape{3, 5}, Shape{70000, 12}}) {
    for (at::ScalarType dtype : kDtypes) {
      at::manual_seed(s.rows + s.cols);
      const at::Tensor w = (1 + 0.1 * at::randn({s.cols})).to(dtype);
      auto op = [&](std::vector<at::Tensor>& a) {
        return FusedRmsNorm(a[0], w.to(a[0].device()), 1e-5);
      };
      auto ref = [&](std::vector<at::Tensor>& a) {
        return testing::RmsNormReference(a[0], w, 1e-5);
      };
      CheckTwins(op, ref, {at::randn({s.rows, s.cols}).to(dtype)},
                 at::randn({s.rows, s.cols}).to(dtype));
    }
  }
}

TEST(FusedOpsCuda, RmsNormTakesNonContiguousInput) {
  SKIP_WITHOUT_CUDA();
  const at::Tensor w = at::randn({96});
  auto op = [&](std::vector<at::Tensor>& a) {
    return FusedRmsNorm(a[0], w.to(a[0].device()), 1e-6);
  };
  auto ref = [&](std::vector<at::Tensor>& a) { return testing::RmsNormReference(a[0], w, 1e-6); };
  CheckTwins(op, ref, {at::randn({21, 96})}, at::randn({21, 96}), /*transpose_inputs=*/true);
}

TEST(FusedOpsCuda, RotaryMatchesCpuTwin) {
  SKIP_WITHOUT_CUDA();
  struct Shape {
    int64_t batch, seq, heads, hd;
  };
  // 10 and 4: one pair per thread; 128 and 16: packs of pairs (Note [16-byte
  // RoPE accesses]), the last beyond one grid dimension of tokens.
  for (const Shape s : {Shape{2, 37, 3, 10}, Shape{1, 128, 32, 128}, Shape{1, 70000, 1, 4},
                        Shape{1, 70000, 2, 16}}) {
    for (at::ScalarType dtype : kDtypes) {
      auto tables = testing::RopeTables(s.batch, s.seq, s.hd, dtype);
      const int64_t width = s.heads * s.hd;
      auto op = [&](std::vector<at::Tensor>& a) {
        const at::Device d = a[0].device();
        return RotaryInPlace(a[0], s.heads, tables[0].to(d), tables[1].to(d));
      };
      auto ref = [&](std::vector<at::Tensor>& a) {
        return testing::RopeReference(a[0], s.heads, tables[0], tables[1]);
      };
      at::manual_seed(s.seq);
      CheckTwins(op, ref, {at::randn({s.batch, s.seq, width}).to(dtype)},
                 at::randn({s.batch, s.seq, width}).to(dtype));
    }
  }
}

TEST(FusedOpsCuda, SwigluMatchesCpuTwin) {
  SKIP_WITHOUT_CUDA();
  struct Shape {
    int64_t rows, cols;
  };
  for (const Shape s : {Shape{37, 1001}, Shape{8, 11008}, Shape{70000, 3}}) {
    for (at::ScalarType dtype : kDtypes) {
      at::manual_seed(s.rows * 7 + s.cols);
      auto op = [](std::vector<at::Tensor>& a) { return FusedSwiglu(a[0], a[1]); };
      auto ref = [](std::vector<at::Tensor>& a) { return testing::SwigluReference(a[0], a[1]); };
      CheckTwins(
          op, ref,
          {(4 * at::randn({s.rows, s.cols})).to(dtype), at::randn({s.rows, s.cols}).to(dtype)},
          at::randn({s.rows, s.cols}).to(dtype));
    }
  }
}

TEST(FusedOpsCuda, SwigluOverFusedGateUpMatchesCpuTwin) {
  SKIP_WITHOUT_CUDA();
  for (at::ScalarType dtype : kDtypes) {
    auto op = [](std::vector<at::Tensor>& a) { return FusedSwiglu(a[0]); };
    auto ref = [](std::vector<at::Tensor>& a) {
      return testing::SwigluReference(a[0].narrow(-1, 0, 999), a[0].narrow(-1, 999, 999));
    };
    CheckTwins(op, ref, {(3 * at::randn({2, 37, 1998})).to(dtype)},
               at::randn({2, 37, 999}).to(dtype));
  }
}

// Halves of 1024 columns: every row of gate, up, out and both gradients
// starts 16-byte aligned, so the 16-byte kernels run (Note [16-byte SwiGLU
// accesses]); rows beyond one grid dimension check their row loop; 1002
// columns (not a whole number of packs) take the one-element kernels.
TEST(FusedOpsCuda, SwigluPackedAccessesMatchCpuTwin) {
  SKIP_WITHOUT_CUDA();
  struct Shape {
    int64_t rows, half;
  };
  for (const Shape s : {Shape{37, 1024}, Shape{70000, 8}, Shape{5, 1002}}) {
    for (at::ScalarType dtype : kDtypes) {
      at::manual_seed(s.rows + s.half);
      auto op = [](std::vector<at::Tensor>& a) { return FusedSwiglu(a[0]); };
      auto ref = [&](std::vector<at::Tensor>& a) {
        return testing::SwigluReference(a[0].narrow(-1, 0, s.half),
                                        a[0].narrow(-1, s.half, s.half));
      };
      CheckTwins(op, ref, {(3 * at::randn({s.rows, 2 * s.half})).to(dtype)},
                 at::randn({s.rows, s.half}).to(dtype));
    }
  }
}

TEST(FusedOpsCuda, RotaryOfQkFrontOfFusedRowMatchesCpuTwin) {
  SKIP_WITHOUT_CUDA();
  const int64_t heads = 3, hd = 16, width = 5 * hd;  // q, k heads rotated; a v head left
  for (at::ScalarType dtype : kDtypes) {
    auto tables = testing::RopeTables(2, 33, hd, dtype);
    auto op = [&](std::vector<at::Tensor>& a) {
      const at::Device d = a[0].device();
      return RotaryInPlace(a[0], heads, tables[0].to(d), tables[1].to(d));
    };
    auto ref = [&](std::vector<at::Tensor>& a) {
      return at::cat(
          {testing::RopeReference(a[0].narrow(-1, 0, heads * hd), heads, tables[0], tables[1]),
           a[0].narrow(-1, heads * hd, width - heads * hd)},
          -1);
    };
    CheckTwins(op, ref, {at::randn({2, 33, width}).to(dtype)}, at::randn({2, 33, width}).to(dtype));
  }
}

TEST(FusedOpsCuda, SwigluTakesNonContiguousInputs) {
  SKIP_WITHOUT_CUDA();
  auto op = [](std::vector<at::Tensor>& a) { return FusedSwiglu(a[0], a[1]); };
  auto ref = [](std::vector<at::Tensor>& a) { return testing::SwigluReference(a[0], a[1]); };
  CheckTwins(op, ref,
             {at::randn({30, 50}).to(at::kBFloat16), at::randn({30, 50}).to(at::kBFloat16)},
             at::randn({30, 50}).to(at::kBFloat16), /*transpose_inputs=*/true);
}

}  // namespace
}  // namespace rigtune::model
