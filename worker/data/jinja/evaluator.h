// Evaluator: runs a parsed template (ast.h) against variables and returns
// the text, plus the byte ranges that {% generation %} blocks wrote.
//
// Scoping follows Jinja: `for` bodies and macros get their own frame (a
// {% set %} inside a loop is gone after the iteration; namespace() carries
// values out), `if` does not. Each render is bounded by RenderLimits, so a
// template cannot loop, recurse or grow its output without end.
#ifndef RIGTUNE_WORKER_DATA_JINJA_EVALUATOR_H_
#define RIGTUNE_WORKER_DATA_JINJA_EVALUATOR_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/jinja/ast.h"
#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{16} << 20;  // any one buffer, incl. {% set %} blocks
  int64_t max_loop_iterations = 1000000;       // all loops of one render together
  int max_call_depth = 64;                     // nested macro / caller() calls
};

struct RenderResult {
  std::string text;
  // [begin, end) byte ranges of text written inside {% generation %} at
  // the top level, in order.
  std::vector<std::pair<size_t, size_t>> generation_spans;
};

// Fails with InvalidArgument "line N: ..." where N is the template line of
// the expression or statement that failed.
absl::StatusOr<RenderResult> Evaluate(const Body& body, const ValueDict& variables,
                                      const RenderLimits& limits);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_EVALUATOR_H_
