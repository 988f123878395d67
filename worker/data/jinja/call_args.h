// BindArgs: matches a call's positional and keyword arguments to a builtin's
// parameter names, Python style. Missing parameters come back undefined.
//
//   BindArgs(args, {"width", "first", "blank"}, "indent")
#ifndef RIGTUNE_WORKER_DATA_JINJA_CALL_ARGS_H_
#define RIGTUNE_WORKER_DATA_JINJA_CALL_ARGS_H_

#include <initializer_list>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

// Fails naming `function` on too many positional arguments, an unknown
// keyword or one given twice.
inline absl::StatusOr<std::vector<Value>> BindArgs(const CallArgs& args,
                                                   std::initializer_list<absl::string_view> names,
                                                   absl::string_view function) {
  std::vector<Value> bound(names.size());
  if (args.positional.size() > names.size()) {
    return absl::InvalidArgumentError(absl::StrCat(function, "() takes at most ", names.size(),
                                                   " argument(s), got ", args.positional.size()));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (absl::string_view name : names) {
      if (name == key) break;
      ++i;
    }
    if (i == names.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(function, "() got an unexpected keyword argument '", key, "'"));
    }
    if (i < args.positional.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(function, "() got multiple values for argument '", key, "'"));
    }
    bound[i] = value;
  }
  return bound;
}

// A string argument or `fallback` when it was not given (or None).
inline absl::StatusOr<std::string> StringArg(const Value& v, absl::string_view name,
                                             std::string fallback) {
  if (v.is_undefined() || v.is_none()) return fallback;
  if (!v.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument '", name, "' must be a string, got ", v.TypeName()));
  }
  return v.str();
}

// An integer argument or `fallback` when it was not given (or None).
inline absl::StatusOr<int64_t> IntArg(const Value& v, absl::string_view name, int64_t fallback) {
  if (v.is_undefined() || v.is_none()) return fallback;
  if (!v.is_int() && !v.is_bool()) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument '", name, "' must be an integer, got ", v.TypeName()));
  }
  return v.as_int();
}

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_CALL_ARGS_H_
