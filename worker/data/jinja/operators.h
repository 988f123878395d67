// Python semantics of Jinja's operators on Values: arithmetic, `~`,
// comparisons, `in`, subscripts and slices (by character for strings),
// iteration, and what using an undefined value does (Jinja's default
// Undefined: prints empty, iterates empty, fails on arithmetic or member
// access). Errors are InvalidArgument with Python's wording.
#ifndef RIGTUNE_WORKER_DATA_JINJA_OPERATORS_H_
#define RIGTUNE_WORKER_DATA_JINJA_OPERATORS_H_

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

// The error using an undefined value raises ("'x' is undefined").
absl::Status UndefinedError(const Value& undefined);

// + - * / // % ** ~ == != < > <= >= in, "not in".
absl::StatusOr<Value> BinaryOp(absl::string_view op, const Value& a, const Value& b);
// "-" or "+" on a number.
absl::StatusOr<Value> UnaryOp(absl::string_view op, const Value& a);
// `needle in haystack`.
absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle);
// x[key]: a missing key or index out of range is undefined, as in Jinja.
absl::StatusOr<Value> GetItem(const Value& object, const Value& key);
// x[start:stop:step] for lists and strings; undefined parts are omitted.
absl::StatusOr<Value> GetSlice(const Value& object, const Value& start, const Value& stop,
                               const Value& step);
// What `for x in value` visits: list items, dict keys, string characters,
// nothing for undefined.
absl::StatusOr<ValueList> Iterate(const Value& value);
// Characters of a UTF-8 string, one string each.
ValueList Characters(const std::string& s);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_OPERATORS_H_
