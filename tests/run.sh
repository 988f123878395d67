#!/usr/bin/env bash
# The test command: set up what is missing, build, run every test.
#
#   tests/run.sh              everything ctest knows (unit, golden, e2e; gpu tests skip without a GPU)
#   tests/run.sh -L unit      any ctest arguments pass through
#
# When the CUDA toolkit is present (even without a GPU) the cuda preset is
# compiled too, so CUDA code cannot rot on CPU-only machines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs=$(nproc)
# ccache: paths under the checkout hash as relative, so another clone of the
# same tree (CI) reuses the objects.
export CCACHE_BASEDIR=$(pwd) CCACHE_NOHASHDIR=1

deploy/setup.sh
cmake --preset cpu >build/configure-cpu.log 2>&1 || { cat build/configure-cpu.log; exit 1; }
cmake --build --preset cpu -j "$jobs"

if [ -x /usr/local/cuda/bin/nvcc ] && [ -z "${RIGTUNE_SKIP_CUDA_BUILD:-}" ]; then
  echo "== compiling the cuda preset (nvcc found; nothing CUDA runs here) =="
  cmake --preset cuda -DRIGTUNE_WITH_SERVICE=OFF >build/configure-cuda.log 2>&1 ||
    { cat build/configure-cuda.log; exit 1; }
  # The CUDA-specific code: kernels, the engine's CUDA paths, GPU tests, benchmarks.
  cmake --build --preset cuda -j "$jobs" --target rigtune_kernels rigtune_engine nf4_cuda_test \
    hqq4_cuda_test engine_cuda_test fsdp_gpu_test fused_ops_cuda_test adamw_cuda_test \
    oom_gpu_test validation_gpu_test nf4_dequant_bench train_bench
fi

echo "== ctest =="
ctest --preset cpu -j "$jobs" --timeout 1500 "$@"
