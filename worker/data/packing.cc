#include "worker/data/packing.h"

#include <algorithm>

namespace rigtune::data {
namespace {

void Append(const EncodedExample& ex, PackedRow* row) {
  if (row->cu_seqlens.empty()) row->cu_seqlens.push_back(0);
  row->input_ids.insert(row->input_ids.end(), ex.input_ids.begin(), ex.input_ids.end());
  row->labels.insert(row->labels.end(), ex.labels.begin(), ex.labels.end());
  for (size_t i = 0; i < ex.input_ids.size(); ++i)
    row->position_ids.push_back(static_cast<int32_t>(i));
  row->cu_seqlens.push_back(static_cast<int32_t>(row->input_ids.size()));
}

}  // namespace

std::vector<PackedRow> PackExamples(absl::Span<const EncodedExample* const> examples,
                                    int64_t context_length) {
  std::vector<PackedRow> rows;
  for (const EncodedExample* ex : examples) {
    if (ex->input_ids.empty()) continue;
    if (rows.empty() || static_cast<int64_t>(rows.back().input_ids.size() + ex->input_ids.size()) >
                            context_length) {
      rows.emplace_back();
    }
    Append(*ex, &rows.back());
  }
  return rows;
}

std::vector<PackedRow> OneExamplePerRow(absl::Span<const EncodedExample* const> examples) {
  std::vector<PackedRow> rows;
  for (const EncodedExample* ex : examples) {
    if (ex->input_ids.empty()) continue;
    rows.emplace_back();
    Append(*ex, &rows.back());
  }
  return rows;
}

Batch MakeBatch(absl::Span<const PackedRow* const> rows, int32_t pad_id) {
  Batch b;
  b.rows = static_cast<int64_t>(rows.size());
  for (const PackedRow* row : rows) {
    b.seq_len = std::max<int64_t>(b.seq_len, static_cast<int64_t>(row->input_ids.size()));
  }
  const size_t total = static_cast<size_t>(b.rows * b.seq_len);
  b.input_ids.assign(total, pad_id);
  b.labels.assign(total, kIgnoreLabel);
  b.target_ids.assign(total, kIgnoreLabel);
  b.position_ids.assign(total, 0);
  b.segment_ids.assign(total, -1);
  b.attention_mask.assign(total, 0);
  for (size_t r = 0; r < rows.size(); ++r) {
    const PackedRow& row = *rows[r];
    const size_t base = r * static_cast<size_t>(b.seq_len);
    std::copy(row.input_ids.begin(), row.input_ids.end(), b.input_ids.begin() + base);
    std::copy(row.labels.begin(), row.labels.end(), b.labels.begin() + base);
    std::copy(row.position_ids.begin(), row.position_ids.end(), b.position_ids.begin() + base);
    for (size_t s = 0; s + 1 < row.cu_seqlens.size(); ++s) {
      const auto begin = static_cast<size_t>(row.cu_seqlens[s]);
      const auto end = static_cast<size_t>(row.cu_seqlens[s + 1]);
      for (size_t i = begin; i < end; ++i) {
        b.segment_ids[base + i] = static_cast<int32_t>(s);
        b.attention_mask[base + i] = 1;
        if (i + 1 < end) b.target_ids[base + i] = row.labels[i + 1];
        b.target_tokens += b.target_ids[base + i] != kIgnoreLabel;
      }
    }
    b.cu_seqlens.push_back(row.cu_seqlens);
    b.real_tokens += static_cast<int64_t>(row.input_ids.size());
  }
  return b;
}

}  // namespace rigtune::data
