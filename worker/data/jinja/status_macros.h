// Early-return helpers for the template engine's StatusOr-heavy code.
#ifndef RIGTUNE_WORKER_DATA_JINJA_STATUS_MACROS_H_
#define RIGTUNE_WORKER_DATA_JINJA_STATUS_MACROS_H_

#include "absl/status/status.h"

#define JINJA_CONCAT_INNER(a, b) a##b
#define JINJA_CONCAT(a, b) JINJA_CONCAT_INNER(a, b)

// JINJA_ASSIGN_OR_RETURN(auto x, F()): x = *F(), or returns F()'s status.
#define JINJA_ASSIGN_OR_RETURN(lhs, expr) \
  JINJA_ASSIGN_OR_RETURN_IMPL(JINJA_CONCAT(jinja_status_or_, __LINE__), lhs, expr)
#define JINJA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(*tmp)

#define JINJA_RETURN_IF_ERROR(expr)                            \
  do {                                                         \
    if (absl::Status jinja_status = (expr); !jinja_status.ok()) \
      return jinja_status;                                     \
  } while (0)

#endif  // RIGTUNE_WORKER_DATA_JINJA_STATUS_MACROS_H_
