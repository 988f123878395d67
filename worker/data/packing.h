// Packing: encoded examples -> fixed-capacity rows -> batches for the engine.
//
// Packed mode puts several examples back to back in one row of at most
// `context_length` tokens (next-fit, in the given order, so the loader's
// shuffle decides the mix). Padded mode is the alternative: one example per
// row. Either way a Batch pads rows to its longest row with the pad id.
//
// Per token a Batch carries input_ids, labels (Hugging Face convention),
// target_ids, position_ids (restarting at 0 for every example, so rotary
// positions match the unpacked example), segment_ids and attention_mask; per
// row, cu_seqlens (example boundaries, the layout variable-length attention
// kernels take).
//
// Note [Packed boundaries]
// Attention: a token may attend only to earlier tokens of its own example.
// On CPU build the block-diagonal causal mask from segment_ids:
// allowed(i, j) = segment_ids[i] == segment_ids[j] >= 0 && j <= i. On CUDA use
// a variable-length attention kernel with the row's cu_seqlens.
// Loss: use target_ids, which are already shifted *within each example*:
// target_ids[i] = labels[i + 1] when i + 1 belongs to the same example, else
// -100. The loss is then cross_entropy(logits[i], target_ids[i]) with no
// further shift, and no position ever predicts a token of another example.
// Engines that shift `labels` themselves (logits[i] vs labels[i + 1] over the
// whole row) get the same result because every example's first label is
// -100 (example_encoder.h); target_ids makes that independent of the labels'
// contents. Averaging over target tokens gives the unpacked examples' loss.
//
// Example:
//   std::vector<PackedRow> rows = PackExamples(examples, 2048);
//   Batch b = MakeBatch({&rows[0], &rows[1]}, tokenizer.pad_id());
#ifndef RIGTUNE_WORKER_DATA_PACKING_H_
#define RIGTUNE_WORKER_DATA_PACKING_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "worker/data/example_encoder.h"

namespace rigtune::data {

struct PackedRow {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;
  std::vector<int32_t> position_ids;
  std::vector<int32_t> cu_seqlens;  // {0, end of example 1, ..., input_ids.size()}
};

// Next-fit packing; every example must be at most `context_length` long
// (EncodeRendered truncates to that).
std::vector<PackedRow> PackExamples(absl::Span<const EncodedExample* const> examples,
                                    int64_t context_length);

// The padding alternative: one example per row.
std::vector<PackedRow> OneExamplePerRow(absl::Span<const EncodedExample* const> examples);

struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;                           // longest row; every array below is rows * seq_len
  std::vector<int32_t> input_ids;                // pad id after a row's end
  std::vector<int32_t> labels;                   // -100 in padding and at example starts
  std::vector<int32_t> target_ids;               // see Note [Packed boundaries]
  std::vector<int32_t> position_ids;             // 0 in padding
  std::vector<int32_t> segment_ids;              // example index within the row, -1 in padding
  std::vector<int32_t> attention_mask;           // 1 real token, 0 padding
  std::vector<std::vector<int32_t>> cu_seqlens;  // per row
  int64_t real_tokens = 0;
  int64_t target_tokens = 0;  // non -100 entries of target_ids
};

Batch MakeBatch(absl::Span<const PackedRow* const> rows, int32_t pad_id);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_PACKING_H_
