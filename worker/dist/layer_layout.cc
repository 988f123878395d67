#include "worker/dist/layer_layout.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "kernels/nf4.h"
#include "worker/model/model_builder.h"

namespace rigtune::dist {
namespace {

constexpr int64_t kAlign = 16;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Appends a segment of `numel` elements of `dtype` at the next aligned offset.
Segment Take(int64_t* cursor, at::ScalarType dtype, std::vector<int64_t> shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  Segment s;
  s.offset = RoundUp(*cursor, kAlign);
  s.bytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
  s.dtype = dtype;
  s.shape = std::move(shape);
  *cursor = s.offset + s.bytes;
  return s;
}

void Put(at::Tensor& flat, const Segment& s, const at::Tensor& t) {
  if (s.bytes == 0) return;
  flat.narrow(0, s.offset, s.bytes).copy_(t.contiguous().view({-1}).view(at::kByte));
}

at::Tensor View(const at::Tensor& flat, const Segment& s) {
  if (s.bytes == 0) return at::Tensor();
  return flat.narrow(0, s.offset, s.bytes).view(s.dtype).view(s.shape);
}

// Writes the gradient of `t` (a trained view) into the float32 buffer
// `flat`, which counts elements of `element` bytes; nothing without one.
void PutGradient(at::Tensor& flat, const Segment& s, const at::Tensor& t, int64_t element) {
  if (s.bytes == 0 || !t.defined() || !t.grad().defined()) return;
  flat.narrow(0, s.offset / element, s.bytes / element).copy_(t.grad().reshape({-1}));
}

// Calls fn(segment, tensor) for every whole tensor of a dense layer.
template <typename Fn>
void ForEachDenseTensor(const LayerLayout& l, const model::DecoderLayer& layer, Fn fn) {
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = l.linears[p];
    if (!lin.present) continue;
    if (layer.proj[p].weight().is_dense()) fn(lin.packed, layer.proj[p].weight().dense());
    fn(lin.bias, layer.proj[p].bias());
  }
  fn(l.input_norm, layer.input_layernorm);
  fn(l.post_norm, layer.post_attention_layernorm);
  fn(l.pre_ff_norm, layer.pre_feedforward_layernorm);
  fn(l.post_ff_norm, layer.post_feedforward_layernorm);
  fn(l.q_norm, layer.q_norm);
  fn(l.k_norm, layer.k_norm);
}

}  // namespace

LayerLayout LayerLayout::ForConfig(const model::ModelConfig& config,
                                   const std::array<lora::LoraSpec, model::kNumProj>& specs,
                                   at::ScalarType dtype, bool nested, int64_t shards,
                                   quant::BaseFormat base) {
  LayerLayout l;
  int64_t cursor = 0, floats = 0;
  for (int p = 0; p < model::kNumProj; ++p) {
    LinearLayout& lin = l.linears[p];
    lin.shape = model::ProjShape(config, p);
    lin.present = model::ProjPresent(p, config.fused_projections);
    if (!lin.present) continue;
    lin.weight_dtype = dtype;
    lin.base = base;
    const int64_t n = lin.shape[0] * lin.shape[1];
    const int64_t blocks = kernels::Nf4NumBlocks(n);
    if (base == quant::BaseFormat::kBf16) {
      lin.packed = Take(&cursor, dtype, lin.shape);  // the dense weight itself
    } else if (base == quant::BaseFormat::kHqq4) {
      const int64_t groups = n / quant::Hqq4Tensor::kGroupSize;
      lin.packed = Take(&cursor, at::kByte, {groups / 2, quant::Hqq4Tensor::kGroupSize});
      lin.hqq_scale = Take(&cursor, at::kFloat, {groups});
      lin.hqq_zero = Take(&cursor, at::kFloat, {groups});
    } else {
      lin.packed = Take(&cursor, at::kByte, {kernels::Nf4PackedBytes(n)});
      if (nested) {
        lin.absmax = Take(&cursor, at::kByte, {blocks});
        lin.nested_absmax = Take(&cursor, at::kFloat, {kernels::Nf4NumNestedBlocks(blocks)});
        lin.nested_map = Take(&cursor, at::kFloat, {256});
      } else {
        lin.absmax = Take(&cursor, at::kFloat, {blocks});
      }
    }
    if (model::ProjHasBias(config, p)) lin.bias = Take(&cursor, dtype, {lin.shape[0]});
    lin.spec = specs[p];
    for (lora::AdapterPart part : lora::AdapterParts(lin.spec)) {
      const int64_t offset = floats;
      (part == lora::AdapterPart::kA   ? lin.lora_a
       : part == lora::AdapterPart::kB ? lin.lora_b
                                       : lin.magnitude) = offset;
      int64_t numel = 1;
      for (int64_t d : lin.PartShape(part)) numel *= d;
      floats += numel;
    }
  }
  l.input_norm = Take(&cursor, dtype, {config.hidden_size});
  l.post_norm = Take(&cursor, dtype, {config.hidden_size});
  const int64_t sandwich = config.sandwich_norms ? config.hidden_size : 0;
  const int64_t qk = config.qk_norm ? config.head_dim : 0;
  l.pre_ff_norm = Take(&cursor, dtype, {sandwich});
  l.post_ff_norm = Take(&cursor, dtype, {sandwich});
  l.q_norm = Take(&cursor, dtype, {qk});
  l.k_norm = Take(&cursor, dtype, {qk});
  l.activation = config.activation;
  l.fused = config.fused_projections;
  l.frozen_bytes = RoundUp(cursor, kAlign * shards);
  l.trainable_floats = RoundUp(std::max<int64_t>(floats, 1), shards);
  return l;
}

absl::Status LayerLayout::Check(const model::DecoderLayer& layer) const {
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = linears[p];
    const lora::QLoraLinear& q = layer.proj[p];
    if (!lin.present) continue;
    const bool nested = lin.nested_absmax.bytes > 0;
    if (q.weight().format() != lin.base) {
      return absl::InvalidArgumentError(
          absl::StrCat(model::ProjPath(p, fused), ": base weight is ",
                       quant::BaseFormatName(q.weight().format()), ", the sharding layout expects ",
                       quant::BaseFormatName(lin.base)));
    }
    if (lin.base == quant::BaseFormat::kBf16 &&
        q.weight().dense().scalar_type() != lin.packed.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          model::ProjPath(p, fused), ": dense base weight is not in the layout's compute dtype"));
    }
    if (q.weight().shape() != lin.shape || q.weight().double_quant() != nested ||
        q.has_adapter() != (lin.spec.r > 0) || q.is_dora() != (lin.spec.dora && lin.spec.r > 0) ||
        q.bias().defined() != (lin.bias.bytes > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(model::ProjPath(p, fused),
                       ": layer does not match the sharding layout (shape, ",
                       "double quantization, adapter or bias differ between layers)"));
    }
  }
  return absl::OkStatus();
}

at::Tensor LayerLayout::FlattenFrozen(const model::DecoderLayer& layer) const {
  at::Tensor flat = at::zeros({frozen_bytes}, layer.input_layernorm.options().dtype(at::kByte));
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = linears[p];
    if (!lin.present) continue;
    const quant::FrozenWeight& w = layer.proj[p].weight();
    if (w.is_dense()) {
      Put(flat, lin.packed, w.dense());
    } else if (w.format() == quant::BaseFormat::kHqq4) {
      Put(flat, lin.packed, w.hqq4().packed());
      Put(flat, lin.hqq_scale, w.hqq4().scale());
      Put(flat, lin.hqq_zero, w.hqq4().zero());
    } else {
      Put(flat, lin.packed, w.nf4().packed());
      Put(flat, lin.absmax, w.nf4().absmax());
      Put(flat, lin.nested_absmax, w.nf4().nested_absmax());
      Put(flat, lin.nested_map, w.nf4().nested_quant_map());
    }
    Put(flat, lin.bias, layer.proj[p].bias());
  }
  Put(flat, input_norm, layer.input_layernorm);
  Put(flat, post_norm, layer.post_attention_layernorm);
  Put(flat, pre_ff_norm, layer.pre_feedforward_layernorm);
  Put(flat, post_ff_norm, layer.post_feedforward_layernorm);
  Put(flat, q_norm, layer.q_norm);
  Put(flat, k_norm, layer.k_norm);
  return flat;
}

namespace {

// Lays `pick(A)` and `pick(B)` of every adapted projection out in the
// trainable layout; undefined tensors (no gradient yet) stay zero.
template <typename Pick>
at::Tensor FlattenAdapters(const LayerLayout& layout, const model::DecoderLayer& layer,
                           Pick pick) {
  at::Tensor flat =
      at::zeros({layout.trainable_floats}, layer.input_layernorm.options().dtype(at::kFloat));
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = layout.linears[p];
    const lora::QLoraLinear& q = layer.proj[p];
    for (lora::AdapterPart part : lora::AdapterParts(lin.spec)) {
      const at::Tensor t = pick(q.adapter(part));
      if (t.defined()) flat.narrow(0, lin.Offset(part), t.numel()).copy_(t.reshape({-1}));
    }
  }
  return flat;
}

}  // namespace

at::Tensor LayerLayout::FlattenTrainable(const model::DecoderLayer& layer) const {
  return FlattenAdapters(*this, layer, [](const at::Tensor& t) { return t.detach(); });
}

at::Tensor LayerLayout::FlattenGradients(const model::DecoderLayer& layer) const {
  return FlattenAdapters(*this, layer, [](const at::Tensor& t) { return t.grad(); });
}

std::vector<std::pair<std::string, Segment>> LayerLayout::NamedSegments(int64_t index) const {
  std::vector<std::pair<std::string, Segment>> out;
  const std::string base = absl::StrCat("model.layers.", index, ".");
  auto add = [&](const std::string& name, const Segment& s) {
    if (s.bytes > 0) out.emplace_back(base + name, s);
  };
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = linears[p];
    if (!lin.present) continue;
    const std::string path = model::ProjPath(p, fused);
    add(path + ".weight", lin.packed);
    add(path + ".bias", lin.bias);
  }
  add("input_layernorm.weight", input_norm);
  add("post_attention_layernorm.weight", post_norm);
  add("pre_feedforward_layernorm.weight", pre_ff_norm);
  add("post_feedforward_layernorm.weight", post_ff_norm);
  add("self_attn.q_norm.weight", q_norm);
  add("self_attn.k_norm.weight", k_norm);
  return out;
}

int64_t LayerLayout::element_size() const {
  return static_cast<int64_t>(c10::elementSize(input_norm.dtype));
}

at::Tensor LayerLayout::FlattenWeightGradients(const model::DecoderLayer& layer) const {
  const int64_t element = element_size();
  at::Tensor flat = at::zeros({frozen_bytes / element},
                              layer.input_layernorm.options().dtype(at::kFloat));
  ForEachDenseTensor(*this, layer, [&](const Segment& s, const at::Tensor& t) {
    PutGradient(flat, s, t, element);
  });
  return flat;
}

absl::StatusOr<model::DecoderLayer> LayerLayout::Unflatten(const at::Tensor& frozen,
                                                           const at::Tensor& trainable,
                                                           bool weights_train) const {
  model::DecoderLayer layer;
  for (int p = 0; p < model::kNumProj; ++p) {
    const LinearLayout& lin = linears[p];
    if (!lin.present) continue;
    absl::StatusOr<quant::FrozenWeight> w;
    if (lin.base == quant::BaseFormat::kBf16) {
      w = quant::FrozenWeight::Dense(View(frozen, lin.packed));
    } else if (lin.base == quant::BaseFormat::kHqq4) {
      auto hqq = quant::Hqq4Tensor::FromParts(lin.shape, View(frozen, lin.packed),
                                              View(frozen, lin.hqq_scale),
                                              View(frozen, lin.hqq_zero));
      if (!hqq.ok()) return hqq.status();
      w = quant::FrozenWeight(*std::move(hqq));
    } else {
      auto nf4 = quant::Nf4Tensor::FromParts(
          lin.shape, lin.weight_dtype, View(frozen, lin.packed), View(frozen, lin.absmax),
          View(frozen, lin.nested_absmax), lin.nested_offset, View(frozen, lin.nested_map));
      if (!nf4.ok()) return nf4.status();
      w = quant::FrozenWeight(*std::move(nf4));
    }
    std::array<at::Tensor, 3> parts;  // A, B, magnitude
    for (lora::AdapterPart part : lora::AdapterParts(lin.spec)) {
      const std::vector<int64_t> shape = lin.PartShape(part);
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      parts[static_cast<int>(part)] =
          trainable.narrow(0, lin.Offset(part), numel).view(shape).requires_grad_(true);
    }
    layer.proj[p] = lora::QLoraLinear(*std::move(w), View(frozen, lin.bias), lin.spec, parts[0],
                                      parts[1], parts[2]);
  }
  layer.input_layernorm = View(frozen, input_norm);
  layer.post_attention_layernorm = View(frozen, post_norm);
  layer.pre_feedforward_layernorm = View(frozen, pre_ff_norm);
  layer.post_feedforward_layernorm = View(frozen, post_ff_norm);
  layer.q_norm = View(frozen, q_norm);
  layer.k_norm = View(frozen, k_norm);
  layer.sliding = sliding;
  layer.activation = activation;
  if (weights_train) {
    // Every tensor is a leaf of its own view: its gradient is read back by
    // FlattenWeightGradients after the layer's backward.
    ForEachDenseTensor(*this, layer, [](const Segment&, const at::Tensor& t) {
      if (t.defined()) t.requires_grad_(true);
    });
  }
  return layer;
}

std::vector<float> LayerLayout::NestedOffsets(const model::DecoderLayer& layer) const {
  std::vector<float> out;
  for (int p = 0; p < model::kNumProj; ++p) {
    out.push_back(linears[p].present ? layer.proj[p].weight().nested_offset() : 0.f);
  }
  return out;
}

void LayerLayout::SetNestedOffsets(const std::vector<float>& offsets) {
  for (int p = 0; p < model::kNumProj; ++p) linears[p].nested_offset = offsets[p];
}

FrozenUnitLayout FrozenUnitLayout::For(const std::vector<at::Tensor>& tensors, int64_t shards) {
  FrozenUnitLayout l;
  int64_t cursor = 0;
  for (const at::Tensor& t : tensors) {
    l.segments.push_back(Take(&cursor, t.scalar_type(), t.sizes().vec()));
  }
  l.bytes = RoundUp(std::max<int64_t>(cursor, 1), kAlign * shards);
  return l;
}

at::Tensor FrozenUnitLayout::Flatten(const std::vector<at::Tensor>& tensors) const {
  at::Tensor flat = at::zeros({bytes}, tensors.at(0).options().dtype(at::kByte));
  for (size_t k = 0; k < segments.size(); ++k) Put(flat, segments[k], tensors.at(k));
  return flat;
}

std::vector<at::Tensor> FrozenUnitLayout::Views(const at::Tensor& flat) const {
  std::vector<at::Tensor> out;
  for (const Segment& s : segments) out.push_back(View(flat, s));
  return out;
}

int64_t FrozenUnitLayout::element_size() const {
  return static_cast<int64_t>(c10::elementSize(segments.at(0).dtype));
}

at::Tensor FrozenUnitLayout::FlattenGradients(const std::vector<at::Tensor>& views) const {
  const int64_t element = element_size();
  at::Tensor flat = at::zeros({bytes / element}, views.at(0).options().dtype(at::kFloat));
  for (size_t k = 0; k < segments.size(); ++k) PutGradient(flat, segments[k], views.at(k), element);
  return flat;
}

}  // namespace rigtune::dist
