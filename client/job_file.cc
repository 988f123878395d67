#include "client/job_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "yaml-cpp/yaml.h"

namespace rigtune::client {

namespace {

namespace fs = std::filesystem;

// Note [YAML expansion budget]
// An alias (*a) refers back to an anchored node (&a) without copying it, so
// a few hundred bytes of YAML can name 10^9 values (a "billion laughs"
// file). Converting to JSON copies every alias, so the conversion counts the
// values it writes and gives up past a budget far above any real JobSpec,
// instead of running out of memory.
constexpr int64_t kMaxYamlValues = 100'000;
constexpr int kMaxYamlDepth = 64;

struct YamlBudget {
  int64_t values_left = kMaxYamlValues;
};

absl::StatusOr<nlohmann::json> YamlToJson(const YAML::Node& node, YamlBudget& budget,
                                          int depth) {
  if (--budget.values_left < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expands to more than ", kMaxYamlValues,
        " values (YAML aliases repeating anchors?); a job file holds one JobSpec"));
  }
  if (depth > kMaxYamlDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("nested deeper than ", kMaxYamlDepth, " levels; a JobSpec is not"));
  }
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& entry : node) {
        if (!entry.first.IsScalar()) {
          return absl::InvalidArgumentError("a mapping key is not a plain string");
        }
        absl::StatusOr<nlohmann::json> value = YamlToJson(entry.second, budget, depth + 1);
        if (!value.ok()) return value.status();
        out[entry.first.Scalar()] = *std::move(value);
      }
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) {
        absl::StatusOr<nlohmann::json> value = YamlToJson(item, budget, depth + 1);
        if (!value.ok()) return value.status();
        out.push_back(*std::move(value));
      }
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string text = node.Scalar();
      if (node.Tag() == "!") return text;  // quoted: always a string
      int64_t integer = 0;
      double real = 0;
      if (absl::SimpleAtoi(text, &integer)) return integer;
      if (absl::SimpleAtod(text, &real) && text.find_first_of("0123456789") != std::string::npos) {
        return real;
      }
      if (text == "true" || text == "false") return text == "true";
      return text;
    }
    default:
      return nullptr;
  }
}

std::string Absolute(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return fs::weakly_canonical(fs::path(base_dir) / path).string();
}

}  // namespace

absl::StatusOr<nlohmann::json> LoadJobFile(const std::string& path) {
  if (path.empty()) return nlohmann::json::object();
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json spec;
  if (absl::EndsWith(path, ".json")) {
    spec = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (spec.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  } else {
    try {
      YamlBudget budget;
      absl::StatusOr<nlohmann::json> converted = YamlToJson(YAML::Load(text.str()), budget, 0);
      if (!converted.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", converted.status().message()));
      }
      spec = *std::move(converted);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
    }
  }
  if (spec.is_null()) spec = nlohmann::json::object();
  if (!spec.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": must hold a mapping (a JobSpec)"));
  }
  AbsolutizePaths(spec, fs::absolute(path).parent_path().string());
  return spec;
}

absl::Status ApplyOverrides(const std::vector<std::string>& overrides, nlohmann::json& spec) {
  for (const std::string& entry : overrides) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--set ", entry, ": must be key=value"));
    }
    const std::string value_text = entry.substr(eq + 1);
    nlohmann::json value = nlohmann::json::parse(value_text, nullptr, false);
    if (value.is_discarded() || value.is_object()) value = value_text;
    nlohmann::json* node = &spec;
    for (absl::string_view part : absl::StrSplit(entry.substr(0, eq), '.')) {
      if (!node->is_object()) *node = nlohmann::json::object();
      node = &(*node)[std::string(part)];
    }
    *node = std::move(value);
  }
  return absl::OkStatus();
}

void AbsolutizePaths(nlohmann::json& spec, const std::string& base_dir) {
  if (spec.contains("model") && spec["model"].is_string()) {
    std::string model = spec["model"];
    if (!absl::StartsWith(model, "random:")) spec["model"] = Absolute(model, base_dir);
  }
  if (spec.contains("dataset") && spec["dataset"].is_object()) {
    for (const char* key : {"path", "validation_path"}) {
      nlohmann::json& dataset = spec["dataset"];
      if (dataset.contains(key) && dataset[key].is_string()) {
        dataset[key] = Absolute(dataset[key], base_dir);
      }
    }
  }
  if (spec.contains("output_dir") && spec["output_dir"].is_string()) {
    spec["output_dir"] = Absolute(spec["output_dir"], base_dir);
  }
}

absl::StatusOr<rigtune::v1::JobSpec> ToJobSpec(const nlohmann::json& spec) {
  rigtune::v1::JobSpec out;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(spec.dump(), &out, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("job spec: ", status.message().as_string()));
  }
  return out;
}

}  // namespace rigtune::client
