// Checkpoint manifests: the one part of a checkpoint folder (checkpoint.h)
// that needs no LibTorch, so that rigtuned can tell a complete checkpoint
// from a damaged one too (it adopts a newer checkpoint on disk that a worker
// wrote but could not record, see server/checkpoint_adoption.h).
//
// manifest.json lists every other file of the folder with its size and
// zlib CRC-32 and is written last:
//   {"format": "rigtune-checkpoint", "version": 1, "step": 12,
//    "files": [{"name": "trainer_state.json", "bytes": 210, "crc32": "9f0c1a2b"}, ...]}
#ifndef RIGTUNE_WORKER_TRAIN_CHECKPOINT_MANIFEST_H_
#define RIGTUNE_WORKER_TRAIN_CHECKPOINT_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rigtune::train {

// The files of a checkpoint folder.
inline constexpr char kManifest[] = "manifest.json";
inline constexpr char kAdapter[] = "adapter_model.safetensors";
inline constexpr char kAdapterConfig[] = "adapter_config.json";
inline constexpr char kOptimizer[] = "optimizer.safetensors";
inline constexpr char kTrainerState[] = "trainer_state.json";

// The whole file; NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// The manifest text for `files` (names inside `dir`, already written).
absl::StatusOr<std::string> MakeManifest(const std::string& dir, int64_t step,
                                         const std::vector<std::string>& files);

// Checks `dir` against its manifest without loading tensors: NOT_FOUND when
// `dir` is not a folder; DATA_LOSS naming the file when manifest.json is
// missing or unreadable, or a listed file is missing, has another size
// (truncated) or another CRC-32 (corrupt), or one of the four data files
// above is not listed.
absl::Status VerifyCheckpoint(const std::string& dir);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_CHECKPOINT_MANIFEST_H_
