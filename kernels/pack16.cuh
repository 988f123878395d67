// 16-byte packs for the elementwise kernels' vectorized paths: one thread
// moves 8 bf16/fp16 or 4 float32 elements per load or store when the row
// starts are 16-byte aligned (Notes [16-byte ... accesses] in rms_norm.cu,
// rope.cu and swiglu.cu say when each kernel takes that path).
#ifndef RIGTUNE_KERNELS_PACK16_CUH_
#define RIGTUNE_KERNELS_PACK16_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

namespace rigtune::kernels {

template <typename T>
constexpr int kVec = 16 / sizeof(T);

template <typename T>
struct alignas(16) Pack {
  T v[kVec<T>];
};

template <typename T>
__device__ inline Pack<T> LoadPack(const T* p) {
  Pack<T> out;
  *reinterpret_cast<uint4*>(&out) = *reinterpret_cast<const uint4*>(p);
  return out;
}

template <typename T>
__device__ inline void StorePack(T* p, const Pack<T>& v) {
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&v);
}

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether every operand (pointer, leading dimension in elements) has its
// rows start on a 16-byte boundary and `cols` splits into whole packs.
template <typename T>
bool Vectorizable(int64_t cols, std::initializer_list<std::pair<const void*, int64_t>> operands) {
  if (cols % kVec<T> != 0) return false;
  for (const auto& [ptr, ld] : operands) {
    if (!Aligned16(ptr) || ld % kVec<T> != 0) return false;
  }
  return true;
}

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_PACK16_CUH_
