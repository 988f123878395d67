// nf4_golden_tool: runs rigtune's NF4 code on safetensors inputs for
// tests/golden/test_nf4.py, which compares the outputs with bitsandbytes.
//
//   nf4_golden_tool quantize IN OUT
//     For every tensor NAME in IN, quantizes it twice, with and without double
//     quantization, and writes the bitsandbytes state dicts under the
//     prefixes NAME.nested and NAME.plain, plus the dequantized tensors (in the
//     input dtype) as NAME.nested.deq and NAME.plain.deq.
//   nf4_golden_tool load IN OUT
//     IN is a state dict saved from bitsandbytes. For every
//     PREFIX.weight.quant_state.bitsandbytes__nf4 key, loads PREFIX with
//     Nf4Tensor::FromStateDict and writes PREFIX.deq (the dequantized weight,
//     "deq" for an empty prefix) and the state dict saved back by ToStateDict
//     under "resaved." + its key.
#include <ATen/ATen.h>

#include <iostream>
#include <map>
#include <string>

#include "worker/model/safetensors.h"
#include "worker/quant/nf4_tensor.h"

namespace {

using rigtune::model::SafetensorsFile;
using rigtune::quant::Nf4Tensor;

constexpr const char* kStateSuffix = "weight.quant_state.bitsandbytes__nf4";

int Fail(const std::string& message) {
  std::cerr << "nf4_golden_tool: " << message << "\n";
  return 1;
}

int Quantize(const SafetensorsFile& in, std::map<std::string, at::Tensor>& out) {
  for (const std::string& name : in.Names()) {
    auto x = in.Read(name);
    if (!x.ok()) return Fail(x.status().ToString());
    for (bool nested : {true, false}) {
      rigtune::quant::Nf4QuantizeOptions options;
      options.double_quant = nested;
      auto q = Nf4Tensor::Quantize(*x, options);
      if (!q.ok()) return Fail(name + ": " + q.status().ToString());
      const std::string prefix = name + (nested ? ".nested" : ".plain");
      for (auto& [key, t] : q->ToStateDict(prefix)) out[key] = t;
      auto deq = q->Dequantize(x->scalar_type());
      if (!deq.ok()) return Fail(name + ": " + deq.status().ToString());
      out[prefix + ".deq"] = *deq;
    }
  }
  return 0;
}

int Load(const SafetensorsFile& in, std::map<std::string, at::Tensor>& out) {
  std::map<std::string, at::Tensor> all;
  for (const std::string& name : in.Names()) {
    auto t = in.Read(name);
    if (!t.ok()) return Fail(t.status().ToString());
    all[name] = *t;
  }
  const std::string suffix = kStateSuffix;
  for (const auto& [key, unused] : all) {
    if (key.size() < suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::string prefix = key.substr(0, key.size() - suffix.size());
    if (!prefix.empty()) prefix.pop_back();  // the '.' before "weight"
    auto q = Nf4Tensor::FromStateDict(all, prefix);
    if (!q.ok()) return Fail(q.status().ToString());
    auto deq = q->Dequantize(q->dtype());
    if (!deq.ok()) return Fail(deq.status().ToString());
    out[prefix.empty() ? "deq" : prefix + ".deq"] = *deq;
    for (auto& [k, t] : q->ToStateDict(prefix)) out["resaved." + k] = t;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return Fail("usage: nf4_golden_tool quantize|load IN OUT");
  const std::string mode = argv[1];
  auto in = SafetensorsFile::Open(argv[2]);
  if (!in.ok()) return Fail(in.status().ToString());
  std::map<std::string, at::Tensor> out;
  int rc = 1;
  if (mode == "quantize") {
    rc = Quantize(*in, out);
  } else if (mode == "load") {
    rc = Load(*in, out);
  } else {
    return Fail("unknown mode " + mode);
  }
  if (rc != 0) return rc;
  if (auto s = rigtune::model::WriteSafetensors(argv[3], out); !s.ok()) return Fail(s.ToString());
  return 0;
}
