#include "worker/data/jinja/globals.h"

#include <ctime>

#include "absl/strings/str_cat.h"
#include "worker/data/jinja/call_args.h"
#include "worker/data/jinja/status_macros.h"

namespace rigtune::data::jinja {
namespace {

constexpr int64_t kMaxRange = 100000;

absl::StatusOr<Value> Range(const CallArgs& args) {
  if (!args.keyword.empty() || args.positional.empty() || args.positional.size() > 3) {
    return absl::InvalidArgumentError("range() takes 1 to 3 positional integers");
  }
  int64_t bounds[3] = {0, 0, 1};
  for (size_t i = 0; i < args.positional.size(); ++i) {
    JINJA_ASSIGN_OR_RETURN(bounds[i], IntArg(args.positional[i], "range", 0));
  }
  if (args.positional.size() == 1) {
    bounds[1] = bounds[0];
    bounds[0] = 0;
  }
  const int64_t step = bounds[2];
  if (step == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
  ValueList out;
  for (int64_t i = bounds[0]; step > 0 ? i < bounds[1] : i > bounds[1]; i += step) {
    if (static_cast<int64_t>(out.size()) >= kMaxRange) {
      return absl::InvalidArgumentError("range() is limited to 100000 items in chat templates");
    }
    out.emplace_back(i);
  }
  return Value::List(std::move(out));
}

// dict(**kw) and namespace(mapping?, **kw).
absl::StatusOr<ValueDict> Entries(const CallArgs& args, const char* function) {
  ValueDict entries;
  if (args.positional.size() > 1 || (args.positional.size() == 1 && !args.positional[0].is_dict())) {
    return absl::InvalidArgumentError(absl::StrCat(function, "() takes at most one mapping"));
  }
  if (!args.positional.empty()) entries = args.positional[0].dict();
  for (const auto& [key, value] : args.keyword) {
    bool replaced = false;
    for (auto& [k, v] : entries) {
      if (k == key) {
        v = value;
        replaced = true;
      }
    }
    if (!replaced) entries.emplace_back(key, value);
  }
  return entries;
}

}  // namespace

ValueDict BuiltinGlobals() {
  ValueDict globals;
  globals.emplace_back("range", Value::Callable("range", Range));
  globals.emplace_back("dict", Value::Callable("dict", [](const CallArgs& args) -> absl::StatusOr<Value> {
    JINJA_ASSIGN_OR_RETURN(ValueDict entries, Entries(args, "dict"));
    return Value::Dict(std::move(entries));
  }));
  globals.emplace_back("namespace", Value::Callable("namespace", [](const CallArgs& args) -> absl::StatusOr<Value> {
    JINJA_ASSIGN_OR_RETURN(ValueDict entries, Entries(args, "namespace"));
    for (const auto& [key, value] : entries) {
      if (!key.empty() && key[0] == '_') {
        return absl::InvalidArgumentError(absl::StrCat(
            "chat templates cannot store underscore-prefixed attributes on a namespace: '", key, "'"));
      }
    }
    return Value::Namespace(std::move(entries));
  }));
  globals.emplace_back("raise_exception", Value::Callable("raise_exception", [](const CallArgs& args)
                                                              -> absl::StatusOr<Value> {
    const std::string message = args.positional.empty() ? "" : args.positional[0].Str();
    return absl::InvalidArgumentError(absl::StrCat("the template raised: ", message));
  }));
  globals.emplace_back("strftime_now", Value::Callable("strftime_now", [](const CallArgs& args)
                                                           -> absl::StatusOr<Value> {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"format"}, "strftime_now"));
    JINJA_ASSIGN_OR_RETURN(std::string format, StringArg(a[0], "format", ""));
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[512];
    const size_t n = format.empty() ? 0 : std::strftime(buf, sizeof(buf), format.c_str(), &local);
    return Value(std::string(buf, n));
  }));
  return globals;
}

}  // namespace rigtune::data::jinja
