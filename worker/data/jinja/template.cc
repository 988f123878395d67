#include "worker/data/jinja/template.h"

#include "absl/strings/str_cat.h"
#include "worker/data/jinja/filters.h"
#include "worker/data/jinja/globals.h"
#include "worker/data/jinja/lexer.h"
#include "worker/data/jinja/parser.h"

namespace rigtune::data::jinja {
namespace {

// Unknown filters and tests fail at parse time, as Jinja's compiler does,
// except inside {% if %} bodies and the branches of `a if b else c`, where
// Jinja (3.x) defers the check to when they run.
absl::Status CheckNames(const Expr& e) {
  if (e.kind == Expr::Kind::kConditional) return e.args[0] ? CheckNames(*e.args[0]) : absl::OkStatus();
  if (e.kind == Expr::Kind::kFilter && !IsKnownFilter(e.name)) {
    return absl::InvalidArgumentError(absl::StrCat("line ", e.line, ": no filter named '", e.name, "'"));
  }
  if (e.kind == Expr::Kind::kTest && !IsKnownTest(e.name)) {
    return absl::InvalidArgumentError(absl::StrCat("line ", e.line, ": no test named '", e.name, "'"));
  }
  for (const ExprPtr& arg : e.args) {
    if (arg) {
      if (absl::Status s = CheckNames(*arg); !s.ok()) return s;
    }
  }
  for (const auto& [key, arg] : e.kwargs) {
    if (absl::Status s = CheckNames(*arg); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void FindGeneration(const Body& body, bool* has_generation) {
  for (const Stmt& s : body) {
    if (s.kind == Stmt::Kind::kGeneration) *has_generation = true;
    FindGeneration(s.body, has_generation);
    FindGeneration(s.else_body, has_generation);
  }
}

absl::Status CheckBody(const Body& body, bool* has_generation) {
  for (const Stmt& s : body) {
    if (s.kind == Stmt::Kind::kGeneration) *has_generation = true;
    for (const Expr* e : {s.expr.get(), s.cond.get(), s.filter.get()}) {
      if (e) {
        if (absl::Status st = CheckNames(*e); !st.ok()) return st;
      }
    }
    for (const auto& [name, def] : s.params) {
      if (def) {
        if (absl::Status st = CheckNames(*def); !st.ok()) return st;
      }
    }
    if (s.kind == Stmt::Kind::kIf) {
      FindGeneration(s.body, has_generation);
      FindGeneration(s.else_body, has_generation);
      continue;
    }
    for (const Body* b : {&s.body, &s.else_body}) {
      if (absl::Status st = CheckBody(*b, has_generation); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Template> Template::Parse(absl::string_view source, TemplateOptions options) {
  Template t;
  t.options_ = std::move(options);
  if (source.size() > t.options_.max_template_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(t.options_.source_name, ": the template has ",
                                                   source.size(), " bytes, more than the limit of ",
                                                   t.options_.max_template_bytes));
  }
  absl::StatusOr<std::vector<Token>> tokens = Lex(source);
  if (!tokens.ok()) return t.Named(tokens.status());
  absl::StatusOr<Body> body = jinja::Parse(*tokens);
  if (!body.ok()) return t.Named(body.status());
  if (absl::Status s = CheckBody(*body, &t.has_generation_); !s.ok()) return t.Named(s);
  t.body_ = std::make_shared<const Body>(std::move(*body));
  return t;
}

absl::StatusOr<RenderResult> Template::Render(const nlohmann::ordered_json& variables) const {
  if (!variables.is_object()) {
    return absl::InvalidArgumentError("template variables must be a JSON object");
  }
  ValueDict context = BuiltinGlobals();
  for (const auto& [name, value] : variables.items()) context.emplace_back(name, Value::FromJson(value));
  absl::StatusOr<RenderResult> result = Evaluate(*body_, context, options_.limits);
  if (!result.ok()) return Named(result.status());
  return result;
}

absl::Status Template::Named(const absl::Status& status) const {
  return absl::Status(status.code(), absl::StrCat(options_.source_name, ", ", status.message()));
}

}  // namespace rigtune::data::jinja
