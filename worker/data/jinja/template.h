// Template: a Jinja2 chat template, parsed once and rendered many times,
// with the semantics of transformers' apply_chat_template (an immutable
// sandbox with trim_blocks, lstrip_blocks, loop controls, {% generation %},
// its tojson, raise_exception and strftime_now). It knows nothing of
// tokenizers: callers pass the variables (messages, tools, bos_token, ...).
//
//   auto t = Template::Parse(text, options);  // options.source_name names it in errors
//   auto r = t->Render({{"messages", messages}, {"add_generation_prompt", false}});
//   // r->text, r->generation_spans
//
// Errors are InvalidArgument "<source_name>, line N: <what>", for a syntax
// error, an unknown filter or test, raise_exception (its message), an
// undefined value used, or a limit hit (template size, output size, loop
// iterations, macro recursion).
#ifndef RIGTUNE_WORKER_DATA_JINJA_TEMPLATE_H_
#define RIGTUNE_WORKER_DATA_JINJA_TEMPLATE_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/jinja/ast.h"
#include "worker/data/jinja/evaluator.h"

namespace rigtune::data::jinja {

struct TemplateOptions {
  std::string source_name = "chat template";  // names the template in errors
  size_t max_template_bytes = size_t{1} << 20;
  RenderLimits limits;
};

class Template {
 public:
  static absl::StatusOr<Template> Parse(absl::string_view source, TemplateOptions options = {});

  // `variables` must be a JSON object; its members become template
  // variables next to the built-in functions.
  absl::StatusOr<RenderResult> Render(const nlohmann::ordered_json& variables) const;

  // True when the template marks assistant text with {% generation %}.
  bool has_generation_blocks() const { return has_generation_; }

 private:
  Template() = default;
  absl::Status Named(const absl::Status& status) const;

  std::shared_ptr<const Body> body_;
  TemplateOptions options_;
  bool has_generation_ = false;
};

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_TEMPLATE_H_
