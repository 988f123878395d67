// Nf4Tensor <-> bitsandbytes' serialized state dict.
//
// Note [bitsandbytes quant_state JSON]
// ------------------------------------
// bitsandbytes stores the non-tensor part of a QuantState as the UTF-8 bytes
// of Python's json.dumps() of a dict, in a uint8 tensor under
// `<prefix>.weight.quant_state.bitsandbytes__nf4`. The keys, in this order:
//   quant_type "nf4", blocksize 64, dtype ("bfloat16", "float16", "float32"),
//   shape (list of ints), and when double-quantized: nested_blocksize 256,
//   nested_dtype "float32", nested_offset (the float32 offset as a Python
//   float, printed with repr()).
// json.dumps separates with ", " and ": ". We write the same bytes, so a file
// saved here is byte-identical to one saved by bitsandbytes; reading accepts
// any valid JSON with these fields.
#include <ATen/ATen.h>

#include <charconv>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/nf4.h"
#include "nlohmann/json.hpp"
#include "worker/quant/nf4_tensor.h"

namespace rigtune::quant {
namespace {

constexpr const char* kQuantStateSuffix = ".quant_state.bitsandbytes__nf4";

std::string DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return "float32";
  }
}

absl::StatusOr<at::ScalarType> DtypeFromName(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float32") return at::kFloat;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", name, "\""));
}

// Python's repr() of a float: shortest round-trip digits, positional for
// exponents -4..15, otherwise d.ddde+XX.
std::string PythonFloatRepr(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-1.2345e-05"
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  std::string sign;
  if (!mant.empty() && mant[0] == '-') {
    sign = "-";
    mant.erase(0, 1);
  }
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits.push_back(c);
  }
  if (exp < -4 || exp >= 16) {
    std::string m = digits.substr(0, 1);
    if (digits.size() > 1) m += "." + digits.substr(1);
    const int mag = exp < 0 ? -exp : exp;
    return absl::StrCat(sign, m, exp < 0 ? "e-" : "e+", mag < 10 ? "0" : "", mag);
  }
  if (exp < 0) return sign + "0." + std::string(-exp - 1, '0') + digits;
  const size_t int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len)
    return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
  return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

std::string WeightKey(const std::string& prefix) {
  return prefix.empty() ? std::string("weight") : prefix + ".weight";
}

absl::StatusOr<at::Tensor> Need(const std::map<std::string, at::Tensor>& tensors,
                                const std::string& key) {
  auto it = tensors.find(key);
  if (it == tensors.end() || !it->second.defined()) {
    return absl::InvalidArgumentError(absl::StrCat("NF4 state dict: missing tensor \"", key, "\""));
  }
  return it->second;
}

absl::Status Bad(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("NF4 state dict: \"", key, "\": ", what));
}

}  // namespace

std::map<std::string, at::Tensor> Nf4Tensor::ToStateDict(const std::string& prefix) const {
  const std::string w = WeightKey(prefix);
  std::map<std::string, at::Tensor> out;
  out[w] = packed_.view({-1, 1});
  out[w + ".absmax"] = absmax_;
  out[w + ".quant_map"] =
      at::from_blob(const_cast<float*>(kernels::kNf4Code.data()), {16}, at::kFloat)
          .to(device(), /*non_blocking=*/false, /*copy=*/true);
  std::string json = absl::StrCat(
      "{\"quant_type\": \"nf4\", \"blocksize\": ", kernels::kNf4BlockSize, ", \"dtype\": \"",
      DtypeName(dtype_), "\", \"shape\": [", absl::StrJoin(shape_, ", "), "]");
  if (nested_) {
    out[w + ".nested_absmax"] = nested_absmax_;
    out[w + ".nested_quant_map"] = nested_map_;
    absl::StrAppend(&json, ", \"nested_blocksize\": ", kernels::kNf4NestedBlockSize,
                    ", \"nested_dtype\": \"float32\", \"nested_offset\": ",
                    PythonFloatRepr(static_cast<double>(offset_)));
  }
  json += "}";
  at::Tensor state = at::empty({static_cast<int64_t>(json.size())}, at::kByte);
  std::memcpy(state.data_ptr<uint8_t>(), json.data(), json.size());
  out[w + kQuantStateSuffix] = state;
  return out;
}

absl::StatusOr<Nf4Tensor> Nf4Tensor::FromStateDict(const std::map<std::string, at::Tensor>& tensors,
                                                   const std::string& prefix) {
  const std::string w = WeightKey(prefix);
  const std::string state_key = w + kQuantStateSuffix;
  auto state = Need(tensors, state_key);
  if (!state.ok()) {
    if (tensors.count(w + ".quant_state.bitsandbytes__fp4")) {
      return Bad(w, "FP4 weights are not supported (only NF4)");
    }
    return state.status();
  }
  if (state->scalar_type() != at::kByte) return Bad(state_key, "must be a uint8 tensor");
  const at::Tensor bytes = state->to(at::kCPU).contiguous();
  const std::string text(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                         static_cast<size_t>(bytes.numel()));
  const nlohmann::json js = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (js.is_discarded() || !js.is_object()) return Bad(state_key, "is not valid JSON");
  if (js.value("quant_type", "") != "nf4") return Bad(state_key, "quant_type must be \"nf4\"");
  if (!js.contains("blocksize") || !js["blocksize"].is_number_integer() ||
      js["blocksize"].get<int64_t>() != kernels::kNf4BlockSize) {
    return Bad(state_key, "blocksize must be 64");
  }
  if (!js.contains("dtype") || !js["dtype"].is_string()) return Bad(state_key, "dtype is missing");
  auto dtype = DtypeFromName(js["dtype"].get<std::string>());
  if (!dtype.ok()) return Bad(state_key, std::string(dtype.status().message()));
  if (!js.contains("shape") || !js["shape"].is_array()) return Bad(state_key, "shape is missing");
  std::vector<int64_t> shape;
  for (const auto& d : js["shape"]) {
    if (!d.is_number_integer()) return Bad(state_key, "shape must be a list of integers");
    shape.push_back(d.get<int64_t>());
  }

  auto packed = Need(tensors, w);
  if (!packed.ok()) return packed.status();
  at::Tensor packed_bytes = packed->contiguous().view({-1});
  if (packed_bytes.scalar_type() != at::kByte) packed_bytes = packed_bytes.view(at::kByte);
  auto absmax = Need(tensors, w + ".absmax");
  if (!absmax.ok()) return absmax.status();

  if (auto qmap = tensors.find(w + ".quant_map"); qmap != tensors.end()) {
    const at::Tensor expected =
        at::from_blob(const_cast<float*>(kernels::kNf4Code.data()), {16}, at::kFloat);
    const at::Tensor got = qmap->second.to(at::kCPU);
    if (got.scalar_type() != at::kFloat || got.numel() != 16 ||
        !at::equal(got.view({-1}), expected)) {
      return Bad(w + ".quant_map", "is not the NF4 code table");
    }
  }

  at::Tensor nested_absmax, nested_map;
  float offset = 0.0f;
  const bool nested = tensors.count(w + ".nested_absmax") > 0;
  if (nested) {
    nested_absmax = tensors.at(w + ".nested_absmax");
    auto map = Need(tensors, w + ".nested_quant_map");
    if (!map.ok()) return map.status();
    nested_map = *map;
    if (!js.contains("nested_offset") || !js["nested_offset"].is_number()) {
      return Bad(state_key, "nested_offset is missing");
    }
    offset = static_cast<float>(js["nested_offset"].get<double>());
    if (js.value("nested_blocksize", int64_t{0}) != kernels::kNf4NestedBlockSize) {
      return Bad(state_key, "nested_blocksize must be 256");
    }
    if (js.value("nested_dtype", std::string()) != "float32") {
      return Bad(state_key, "nested_dtype must be \"float32\"");
    }
    if (absmax->scalar_type() != at::kByte) {
      return Bad(w + ".absmax", "must be uint8 codes when nested_absmax is present");
    }
  } else if (absmax->scalar_type() != at::kFloat) {
    return Bad(w + ".absmax", "must be float32 without nested_absmax");
  }
  auto t =
      FromParts(std::move(shape), *dtype, packed_bytes, *absmax, nested_absmax, offset, nested_map);
  if (!t.ok()) return Bad(w, std::string(t.status().message()));
  return t;
}

}  // namespace rigtune::quant
