// The functions every chat template can call, as transformers defines them:
// range (at most 100000 items, like Jinja's sandbox), dict(**kw),
// namespace(...) (the one mutable object; "_" names refused),
// raise_exception(message) (fails the render with the template's own
// message) and strftime_now(format) (local time, C locale).
#ifndef RIGTUNE_WORKER_DATA_JINJA_GLOBALS_H_
#define RIGTUNE_WORKER_DATA_JINJA_GLOBALS_H_

#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

ValueDict BuiltinGlobals();

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_GLOBALS_H_
