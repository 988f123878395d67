#include "worker/plan/step_policy.h"

#include <algorithm>

namespace rigtune::plan {

int64_t MlpChunkTokens(int64_t tokens, int64_t intermediate_size, int64_t dtype_bytes,
                       int64_t requested) {
  if (requested > 0) return requested < tokens ? requested : 0;
  const int64_t row_bytes = 2 * std::max<int64_t>(1, intermediate_size) * dtype_bytes;
  if (tokens * row_bytes <= kMlpTileAboveBytes) return 0;
  const int64_t rows = std::max<int64_t>(256, kMlpChunkBytes / row_bytes / 256 * 256);
  return rows < tokens ? rows : 0;
}

Recompute ParseRecompute(const std::string& name) {
  if (name == "full") return Recompute::kFull;
  if (name == "keep_mlp") return Recompute::kKeepMlp;
  return Recompute::kAuto;
}

bool KeepsMlpProducts(Recompute policy, bool activation_offload, int64_t mlp_chunk_tokens,
                      int64_t host_bytes_needed, int64_t host_memory_bytes) {
  if (policy == Recompute::kFull || mlp_chunk_tokens > 0) return false;
  if (policy == Recompute::kKeepMlp) return true;
  if (!activation_offload) return false;
  return host_memory_bytes <= 0 ||
         static_cast<double>(host_bytes_needed) <=
             kKeepMlpHostFraction * static_cast<double>(host_memory_bytes);
}

int64_t GateUpProductBytes(int64_t tokens, int64_t intermediate_size, int64_t dtype_bytes) {
  return tokens * 2 * intermediate_size * dtype_bytes;
}

int64_t PinnedHostBytes(int64_t bytes) {
  int64_t block = 1;
  while (block < bytes) block <<= 1;
  return bytes <= 0 ? 0 : block;
}

}  // namespace rigtune::plan
