// GetAttr: `x.name` in a template, under transformers' immutable sandbox.
// Dicts give their entry (or their read-only methods get / items / keys /
// values, which Python finds first); strings give bound str methods
// (startswith, split, format, ...); namespaces give their attributes.
// Methods that would mutate (list.append, dict.update, ...) fail when
// called, as the sandbox's SecurityError does; anything else is undefined.
//
//   GetAttr(Value("a b"), "split")->Call({}) == ["a", "b"]
#ifndef RIGTUNE_WORKER_DATA_JINJA_METHODS_H_
#define RIGTUNE_WORKER_DATA_JINJA_METHODS_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

// Fails only when `object` is undefined.
absl::StatusOr<Value> GetAttr(const Value& object, const std::string& name);

// str.format(*args, **kwargs) with "{}", "{0}" and "{name}" fields.
absl::StatusOr<std::string> PythonFormat(const std::string& format, const CallArgs& args);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_METHODS_H_
