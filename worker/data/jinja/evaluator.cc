#include "worker/data/jinja/evaluator.h"

#include <memory>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/data/jinja/filters.h"
#include "worker/data/jinja/methods.h"
#include "worker/data/jinja/operators.h"
#include "worker/data/jinja/status_macros.h"

namespace rigtune::data::jinja {
namespace {

using Frame = std::unordered_map<std::string, Value>;
using Scope = std::vector<std::shared_ptr<Frame>>;
// Macros hold their defining scope weakly: frames own the macro values, so
// owning the frames back would leak every render.
using Closure = std::vector<std::weak_ptr<Frame>>;

// Prefixes "line N: " unless an inner node already did.
absl::Status Locate(int line, const absl::Status& status) {
  if (status.ok() || absl::StartsWith(status.message(), "line ")) return status;
  return absl::Status(status.code(), absl::StrCat("line ", line, ": ", status.message()));
}

class Evaluator {
 public:
  explicit Evaluator(const RenderLimits& limits) : limits_(limits) {}

  absl::StatusOr<RenderResult> Run(const Body& body, const ValueDict& variables) {
    auto globals = std::make_shared<Frame>();
    for (const auto& [name, value] : variables) (*globals)[name] = value;
    scope_ = {globals, std::make_shared<Frame>()};
    out_ = &result_.text;
    JINJA_RETURN_IF_ERROR(Exec(body).status());
    return std::move(result_);
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  // Pushes a frame for its lifetime.
  class FrameGuard {
   public:
    FrameGuard(Scope* scope, std::shared_ptr<Frame> frame) : scope_(scope) {
      scope_->push_back(std::move(frame));
    }
    ~FrameGuard() { scope_->pop_back(); }

   private:
    Scope* scope_;
  };

  Value Lookup(const std::string& name) const {
    for (auto it = scope_.rbegin(); it != scope_.rend(); ++it) {
      if (auto found = (*it)->find(name); found != (*it)->end()) return found->second;
    }
    return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
  }

  absl::Status Write(absl::string_view text) {
    out_->append(text.data(), text.size());
    if (out_->size() > limits_.max_output_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the template's output grew beyond ", limits_.max_output_bytes, " bytes"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Flow> Exec(const Body& body) {
    for (const Stmt& s : body) {
      absl::StatusOr<Flow> flow = ExecStmt(s);
      if (!flow.ok()) return Locate(s.line, flow.status());
      if (*flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  // Renders `body` into a string of its own.
  absl::StatusOr<std::string> Capture(const Body& body) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    absl::StatusOr<Flow> flow = Exec(body);
    out_ = saved;
    if (!flow.ok()) return flow.status();
    return buffer;
  }

  // Applies a filter chain (kSetBlock / kFilterBlock) to a rendered body.
  absl::StatusOr<Value> FilterBlock(const Expr& filter, std::string body) {
    auto frame = std::make_shared<Frame>();
    (*frame)[kBlockValueName] = Value(std::move(body));
    FrameGuard guard(&scope_, frame);
    return Eval(filter);
  }

  absl::Status Assign(const std::vector<std::string>& targets, const Value& value, Frame* frame) {
    if (targets.size() == 1) {
      (*frame)[targets[0]] = value;
      return absl::OkStatus();
    }
    JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(value));
    if (items.size() != targets.size()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot unpack ", items.size(),
                                                     " values into ", targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) (*frame)[targets[i]] = items[i];
    return absl::OkStatus();
  }

  absl::StatusOr<Flow> ExecStmt(const Stmt& s) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        JINJA_RETURN_IF_ERROR(Write(s.text));
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        JINJA_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        JINJA_RETURN_IF_ERROR(Write(v.Str()));
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf: {
        JINJA_ASSIGN_OR_RETURN(Value cond, Eval(*s.expr));
        return Exec(cond.Truthy() ? s.body : s.else_body);
      }
      case Stmt::Kind::kFor: return ExecFor(s);
      case Stmt::Kind::kSet: {
        JINJA_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        if (!s.text.empty()) {
          const Value ns = Lookup(s.targets[0]);
          if (!ns.is_namespace()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "cannot set attribute '", s.text, "' of '", s.targets[0],
                "': only namespace() objects can be assigned to"));
          }
          if (s.text[0] == '_') {
            return absl::InvalidArgumentError(
                "chat templates cannot store underscore-prefixed attributes on a namespace");
          }
          ns.SetNamespaceAttr(s.text, std::move(v));
          return Flow::kNormal;
        }
        JINJA_RETURN_IF_ERROR(Assign(s.targets, v, scope_.back().get()));
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock:
      case Stmt::Kind::kFilterBlock: {
        JINJA_ASSIGN_OR_RETURN(std::string body, Capture(s.body));
        Value v(std::move(body));
        if (s.filter) {
          JINJA_ASSIGN_OR_RETURN(v, FilterBlock(*s.filter, v.str()));
        }
        if (s.kind == Stmt::Kind::kFilterBlock) {
          JINJA_RETURN_IF_ERROR(Write(v.Str()));
        } else {
          (*scope_.back())[s.targets[0]] = std::move(v);
        }
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro: {
        const Stmt* macro = &s;
        const Closure closure(scope_.begin(), scope_.end());
        (*scope_.back())[s.text] =
            Value::Callable(s.text, [this, macro, closure](const CallArgs& args) {
              return CallMacro(*macro, closure, args);
            });
        return Flow::kNormal;
      }
      case Stmt::Kind::kCallBlock: return ExecCallBlock(s);
      case Stmt::Kind::kGeneration: {
        const bool top = out_ == &result_.text;
        const size_t begin = out_->size();
        JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(s.body));
        if (top) result_.generation_spans.emplace_back(begin, out_->size());
        return flow;
      }
      case Stmt::Kind::kBreak: return Flow::kBreak;
      case Stmt::Kind::kContinue: return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecFor(const Stmt& s) {
    JINJA_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr));
    JINJA_ASSIGN_OR_RETURN(ValueList all, Iterate(iterable));
    ValueList items;
    for (const Value& item : all) {
      if (s.cond) {
        auto frame = std::make_shared<Frame>();
        JINJA_RETURN_IF_ERROR(Assign(s.targets, item, frame.get()));
        FrameGuard guard(&scope_, frame);
        JINJA_ASSIGN_OR_RETURN(Value keep, Eval(*s.cond));
        if (!keep.Truthy()) continue;
      }
      items.push_back(item);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++iterations_ > limits_.max_loop_iterations) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the template ran more than ", limits_.max_loop_iterations, " loop iterations"));
      }
      auto frame = std::make_shared<Frame>();
      JINJA_RETURN_IF_ERROR(Assign(s.targets, items[i], frame.get()));
      (*frame)["loop"] = LoopInfo(items, i);
      FrameGuard guard(&scope_, frame);
      JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(s.body));
      if (flow == Flow::kBreak) break;
    }
    if (n == 0) return Exec(s.else_body);
    return Flow::kNormal;
  }

  static Value LoopInfo(const ValueList& items, int64_t i) {
    const int64_t n = static_cast<int64_t>(items.size());
    ValueDict loop = {{"index", Value(i + 1)},      {"index0", Value(i)},
                      {"revindex", Value(n - i)},   {"revindex0", Value(n - i - 1)},
                      {"first", Value(i == 0)},     {"last", Value(i == n - 1)},
                      {"length", Value(n)},         {"depth", Value(1)},
                      {"depth0", Value(0)}};
    if (i > 0) loop.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < n) loop.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
    loop.emplace_back("cycle", Value::Callable("loop.cycle", [i](const CallArgs& args)
                                                                 -> absl::StatusOr<Value> {
      if (args.positional.empty()) return absl::InvalidArgumentError("loop.cycle() needs values");
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    }));
    return Value::Dict(std::move(loop));
  }

  absl::StatusOr<Value> CallMacro(const Stmt& macro, const Closure& closure, const CallArgs& args) {
    if (call_depth_ >= limits_.max_call_depth) {
      return absl::InvalidArgumentError(absl::StrCat(
          "macro calls nest deeper than ", limits_.max_call_depth, " (runaway recursion?)"));
    }
    if (args.positional.size() > macro.params.size()) {
      return absl::InvalidArgumentError(absl::StrCat("macro '", macro.text, "' takes at most ",
                                                     macro.params.size(), " argument(s)"));
    }
    auto frame = std::make_shared<Frame>();
    for (const auto& [key, value] : args.keyword) {
      bool known = key == "caller";
      for (const auto& param : macro.params) known = known || param.first == key;
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat("macro '", macro.text, "' has no parameter '", key, "'"));
      }
      (*frame)[key] = value;
    }
    Scope defining;
    for (const std::weak_ptr<Frame>& weak : closure) {
      defining.push_back(weak.lock());
      if (defining.back() == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("macro '", macro.text, "' called after the block that defined it ended"));
      }
    }
    Scope saved = std::move(scope_);
    scope_ = std::move(defining);
    scope_.push_back(frame);
    ++call_depth_;
    absl::StatusOr<std::string> body = BindParamsAndRender(macro, args, frame.get());
    --call_depth_;
    scope_ = std::move(saved);
    if (!body.ok()) return body.status();
    return Value(std::move(*body));
  }

  absl::StatusOr<std::string> BindParamsAndRender(const Stmt& macro, const CallArgs& args,
                                                  Frame* frame) {
    for (size_t i = 0; i < macro.params.size(); ++i) {
      const auto& [name, default_expr] = macro.params[i];
      if (i < args.positional.size()) {
        (*frame)[name] = args.positional[i];
      } else if (frame->count(name) == 0) {
        if (default_expr) {
          JINJA_ASSIGN_OR_RETURN((*frame)[name], Eval(*default_expr));
        } else {
          (*frame)[name] = Value::Undefined(absl::StrCat("'", name, "' is undefined"));
        }
      }
    }
    return Capture(macro.body);
  }

  absl::StatusOr<Flow> ExecCallBlock(const Stmt& s) {
    const Expr& call = *s.expr;
    JINJA_ASSIGN_OR_RETURN(Value callee, Eval(*call.args[0]));
    JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(call));
    const Stmt* block = &s;
    const Closure closure(scope_.begin(), scope_.end());
    args.keyword.emplace_back("caller", Value::Callable("caller", [this, block, closure](
                                                                      const CallArgs& a) {
      return CallMacro(*block, closure, a);
    }));
    JINJA_ASSIGN_OR_RETURN(Value result, CallValue(callee, args));
    JINJA_RETURN_IF_ERROR(Write(result.Str()));
    return Flow::kNormal;
  }

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e) {
    CallArgs args;
    for (size_t i = 1; i < e.args.size(); ++i) {
      JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [key, expr] : e.kwargs) {
      JINJA_ASSIGN_OR_RETURN(Value v, Eval(*expr));
      args.keyword.emplace_back(key, std::move(v));
    }
    return args;
  }

  static absl::StatusOr<Value> CallValue(const Value& callee, const CallArgs& args) {
    if (callee.is_undefined()) return UndefinedError(callee);
    if (!callee.is_callable()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", callee.TypeName(), "' object is not callable"));
    }
    return callee.Call(args);
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    absl::StatusOr<Value> v = EvalInner(e);
    if (!v.ok()) return Locate(e.line, v.status());
    return v;
  }

  absl::StatusOr<Value> EvalInner(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.literal;
      case Expr::Kind::kName: return Lookup(e.name);
      case Expr::Kind::kList: {
        ValueList items;
        for (const ExprPtr& item : e.args) {
          JINJA_ASSIGN_OR_RETURN(Value v, Eval(*item));
          items.push_back(std::move(v));
        }
        return Value::List(std::move(items));
      }
      case Expr::Kind::kDict: {
        ValueDict items;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          JINJA_ASSIGN_OR_RETURN(Value key, Eval(*e.args[i]));
          JINJA_ASSIGN_OR_RETURN(Value value, Eval(*e.args[i + 1]));
          std::string k = key.Str();
          bool replaced = false;
          for (auto& [existing, v] : items) {
            if (existing == k) {
              v = value;
              replaced = true;
            }
          }
          if (!replaced) items.emplace_back(std::move(k), std::move(value));
        }
        return Value::Dict(std::move(items));
      }
      case Expr::Kind::kAttr: {
        JINJA_ASSIGN_OR_RETURN(Value object, Eval(*e.args[0]));
        return GetAttr(object, e.name);
      }
      case Expr::Kind::kSubscript: {
        JINJA_ASSIGN_OR_RETURN(Value object, Eval(*e.args[0]));
        JINJA_ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
        return GetItem(object, key);
      }
      case Expr::Kind::kSlice: {
        JINJA_ASSIGN_OR_RETURN(Value object, Eval(*e.args[0]));
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (e.args[i + 1]) {
            JINJA_ASSIGN_OR_RETURN(parts[i], Eval(*e.args[i + 1]));
          }
        }
        return GetSlice(object, parts[0], parts[1], parts[2]);
      }
      case Expr::Kind::kCall: {
        JINJA_ASSIGN_OR_RETURN(Value callee, Eval(*e.args[0]));
        JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
        return CallValue(callee, args);
      }
      case Expr::Kind::kFilter: {
        JINJA_ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0]));
        JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
        return ApplyFilter(e.name, subject, args);
      }
      case Expr::Kind::kTest: {
        JINJA_ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0]));
        JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e));
        JINJA_ASSIGN_OR_RETURN(bool passed, ApplyTest(e.name, subject, args));
        return Value(passed != e.negated);
      }
      case Expr::Kind::kUnary: {
        JINJA_ASSIGN_OR_RETURN(Value operand, Eval(*e.args[0]));
        if (e.name == "not") return Value(!operand.Truthy());
        return UnaryOp(e.name, operand);
      }
      case Expr::Kind::kBinary: {
        JINJA_ASSIGN_OR_RETURN(Value left, Eval(*e.args[0]));
        if (e.name == "and" && !left.Truthy()) return left;
        if (e.name == "or" && left.Truthy()) return left;
        JINJA_ASSIGN_OR_RETURN(Value right, Eval(*e.args[1]));
        if (e.name == "and" || e.name == "or") return right;
        return BinaryOp(e.name, left, right);
      }
      case Expr::Kind::kConditional: {
        JINJA_ASSIGN_OR_RETURN(Value cond, Eval(*e.args[0]));
        if (cond.Truthy()) return Eval(*e.args[1]);
        if (e.args[2]) return Eval(*e.args[2]);
        return Value::Undefined("the inline if-expression evaluated to false and has no else");
      }
    }
    return Value();
  }

  const RenderLimits& limits_;
  Scope scope_;
  RenderResult result_;
  std::string* out_ = nullptr;
  int64_t iterations_ = 0;
  int call_depth_ = 0;
};

}  // namespace

absl::StatusOr<RenderResult> Evaluate(const Body& body, const ValueDict& variables,
                                      const RenderLimits& limits) {
  return Evaluator(limits).Run(body, variables);
}

}  // namespace rigtune::data::jinja
