// Jinja's filters (`x | name(args)`) and tests (`x is name args`), as
// transformers' environment has them (its own `tojson`: json.dumps with
// ensure_ascii=False, optional indent / separators / sort_keys).
//
// Filters: abs capitalize count d default dictsort e escape first float
// indent int items join last length list lower map max min reject
// rejectattr replace reverse round safe select selectattr sort string sum
// title tojson trim unique upper.
// Tests: boolean callable defined divisibleby eq equalto even false float ge
// gt in integer iterable le lower lt mapping ne none number odd sameas
// sequence string true undefined upper (and the operator spellings == != < >
// <= >=).
#ifndef RIGTUNE_WORKER_DATA_JINJA_FILTERS_H_
#define RIGTUNE_WORKER_DATA_JINJA_FILTERS_H_

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

bool IsKnownFilter(absl::string_view name);

// markupsafe's escape: & < > " ' as entities.
std::string HtmlEscape(const std::string& s);
bool IsKnownTest(absl::string_view name);

// Fails with InvalidArgument naming the filter on bad arguments or types.
absl::StatusOr<Value> ApplyFilter(absl::string_view name, const Value& subject,
                                  const CallArgs& args);
absl::StatusOr<bool> ApplyTest(absl::string_view name, const Value& subject, const CallArgs& args);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_FILTERS_H_
