#include "worker/data/jinja/expression_parser.h"

#include "absl/strings/numbers.h"
#include "worker/data/jinja/status_macros.h"

namespace rigtune::data::jinja {

ExprPtr NewExpr(Expr::Kind kind, int line, std::string name) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  e->name = std::move(name);
  return e;
}

std::string ExpressionParser::Describe(const Token& t) {
  switch (t.type) {
    case T::kText: return "template text";
    case T::kVarBegin: return "'{{'";
    case T::kVarEnd: return "'}}'";
    case T::kBlockBegin: return "'{%'";
    case T::kBlockEnd: return "'%}'";
    case T::kEnd: return "end of template";
    case T::kString: return "a string";
    case T::kInt: case T::kFloat: return "a number";
    default: return absl::StrCat("'", t.text, "'");
  }
}

// expr or "a, b" (a tuple, as in {% set x = a, b %}).
absl::StatusOr<ExprPtr> ExpressionParser::ParseTuple(int depth) {
  JINJA_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(depth));
  if (!IsOp(",")) return first;
  ExprPtr list = NewExpr(Expr::Kind::kList, first->line);
  list->args.push_back(std::move(first));
  while (IsOp(",")) {
    ++pos_;
    JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(depth));
    list->args.push_back(std::move(item));
  }
  return list;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseExpression(int depth) {
  JINJA_RETURN_IF_ERROR(Deeper(depth));
  JINJA_ASSIGN_OR_RETURN(ExprPtr e, ParseOr(depth + 1));
  while (IsName("if")) {
    const int line = Next().line;
    ExprPtr cond = NewExpr(Expr::Kind::kConditional, line);
    JINJA_ASSIGN_OR_RETURN(ExprPtr test, ParseOr(depth + 1));
    ExprPtr otherwise;
    if (IsName("else")) {
      ++pos_;
      JINJA_ASSIGN_OR_RETURN(otherwise, ParseExpression(depth + 1));
    }
    cond->args.push_back(std::move(test));
    cond->args.push_back(std::move(e));
    cond->args.push_back(std::move(otherwise));
    e = std::move(cond);
  }
  return e;
}

ExprPtr ExpressionParser::Binary(std::string op, ExprPtr left, ExprPtr right) {
  ExprPtr e = NewExpr(Expr::Kind::kBinary, left->line, std::move(op));
  e->args.push_back(std::move(left));
  e->args.push_back(std::move(right));
  return e;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseOr(int depth) {
  JINJA_RETURN_IF_ERROR(Deeper(depth));
  JINJA_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd(depth));
  while (IsName("or")) {
    ++pos_;
    JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd(depth));
    left = Binary("or", std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseAnd(int depth) {
  JINJA_ASSIGN_OR_RETURN(ExprPtr left, ParseNot(depth));
  while (IsName("and")) {
    ++pos_;
    JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseNot(depth));
    left = Binary("and", std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseNot(int depth) {
  JINJA_RETURN_IF_ERROR(Deeper(depth));
  if (IsName("not")) {
    ExprPtr e = NewExpr(Expr::Kind::kUnary, Next().line, "not");
    JINJA_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot(depth + 1));
    e->args.push_back(std::move(operand));
    return e;
  }
  return ParseCompare(depth);
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseCompare(int depth) {
  JINJA_ASSIGN_OR_RETURN(ExprPtr left, ParseMath(depth, 0));
  if (!IsComparison()) return left;
  std::string op = Next().text;
  if (op == "not") {
    ++pos_;
    op = "not in";
  }
  JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseMath(depth, 0));
  if (IsComparison()) {
    return Error(Peek(), "chained comparisons (a < b < c) are not supported; use 'and'");
  }
  return Binary(op, std::move(left), std::move(right));
}

bool ExpressionParser::IsComparison() const {
  if (Peek().type == T::kOperator) {
    const std::string& t = Peek().text;
    return t == "==" || t == "!=" || t == "<" || t == ">" || t == "<=" || t == ">=";
  }
  return IsName("in") || (IsName("not") && IsName("in", 1));
}

// Binary levels above unary: 0: + -, 1: ~, 2: * / // %, 3: **.
absl::StatusOr<ExprPtr> ExpressionParser::ParseMath(int depth, int level) {
  static const std::vector<std::vector<absl::string_view>> kLevels = {
      {"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
  if (level == 4) return ParseUnary(depth + 1, true);
  JINJA_ASSIGN_OR_RETURN(ExprPtr left, ParseMath(depth, level + 1));
  while (true) {
    bool matched = false;
    for (absl::string_view op : kLevels[level]) matched = matched || IsOp(op);
    if (!matched) return left;
    std::string op = Next().text;
    JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseMath(depth, level + 1));
    left = Binary(std::move(op), std::move(left), std::move(right));
  }
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseUnary(int depth, bool with_filter) {
  JINJA_RETURN_IF_ERROR(Deeper(depth));
  ExprPtr node;
  if (IsOp("-") || IsOp("+")) {
    const Token& t = Next();
    node = NewExpr(Expr::Kind::kUnary, t.line, t.text);
    JINJA_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(depth + 1, false));
    node->args.push_back(std::move(operand));
  } else {
    JINJA_ASSIGN_OR_RETURN(node, ParsePrimary(depth));
  }
  JINJA_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node), depth));
  if (with_filter) return ParseFilters(std::move(node), depth, false);
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePrimary(int depth) {
  const Token& t = Peek();
  if (t.type == T::kName) {
    ++pos_;
    if (t.text == "true" || t.text == "True") return Literal(Value(true), t.line);
    if (t.text == "false" || t.text == "False") return Literal(Value(false), t.line);
    if (t.text == "none" || t.text == "None") return Literal(Value::None(), t.line);
    return NewExpr(Expr::Kind::kName, t.line, t.text);
  }
  if (t.type == T::kString) {
    std::string s;
    while (Peek().type == T::kString) s += Next().text;
    return Literal(Value(std::move(s)), t.line);
  }
  if (t.type == T::kInt) {
    ++pos_;
    int64_t v = 0;
    if (!absl::SimpleAtoi(t.text, &v)) return Error(t, "integer literal out of range");
    return Literal(Value(v), t.line);
  }
  if (t.type == T::kFloat) {
    ++pos_;
    double v = 0;
    if (!absl::SimpleAtod(t.text, &v)) return Error(t, "bad float literal");
    return Literal(Value(v), t.line);
  }
  if (IsOp("(")) {
    ++pos_;
    ExprPtr list = NewExpr(Expr::Kind::kList, t.line);
    if (IsOp(")")) {
      ++pos_;
      return list;
    }
    JINJA_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(depth + 1));
    if (!IsOp(",")) {
      JINJA_RETURN_IF_ERROR(ExpectOp(")"));
      return first;
    }
    list->args.push_back(std::move(first));
    JINJA_RETURN_IF_ERROR(ParseItems(")", depth, &list->args));
    return list;
  }
  if (IsOp("[")) {
    ++pos_;
    ExprPtr list = NewExpr(Expr::Kind::kList, t.line);
    JINJA_RETURN_IF_ERROR(ParseItems("]", depth, &list->args, /*leading_comma=*/false));
    return list;
  }
  if (IsOp("{")) {
    ++pos_;
    ExprPtr dict = NewExpr(Expr::Kind::kDict, t.line);
    while (!IsOp("}")) {
      JINJA_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(depth + 1));
      JINJA_RETURN_IF_ERROR(ExpectOp(":"));
      JINJA_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(depth + 1));
      dict->args.push_back(std::move(key));
      dict->args.push_back(std::move(value));
      if (!IsOp(",")) break;
      ++pos_;
    }
    JINJA_RETURN_IF_ERROR(ExpectOp("}"));
    return dict;
  }
  return Expected("an expression");
}

// Comma-separated expressions up to `close` (a trailing comma is fine).
absl::Status ExpressionParser::ParseItems(absl::string_view close, int depth,
                                          std::vector<ExprPtr>* items, bool leading_comma) {
  if (leading_comma) JINJA_RETURN_IF_ERROR(ExpectOp(","));
  while (!IsOp(close)) {
    JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(depth + 1));
    items->push_back(std::move(item));
    if (!IsOp(",")) break;
    ++pos_;
  }
  return ExpectOp(close);
}

ExprPtr ExpressionParser::Literal(Value v, int line) {
  ExprPtr e = NewExpr(Expr::Kind::kLiteral, line);
  e->literal = std::move(v);
  return e;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePostfix(ExprPtr node, int depth) {
  while (true) {
    if (IsOp(".")) {
      const int line = Next().line;
      if (Peek().type == T::kInt) {
        ExprPtr sub = NewExpr(Expr::Kind::kSubscript, line);
        sub->args.push_back(std::move(node));
        JINJA_ASSIGN_OR_RETURN(ExprPtr index, ParsePrimary(depth));
        sub->args.push_back(std::move(index));
        node = std::move(sub);
        continue;
      }
      JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
      ExprPtr attr = NewExpr(Expr::Kind::kAttr, line, std::move(name));
      attr->args.push_back(std::move(node));
      node = std::move(attr);
    } else if (IsOp("[")) {
      JINJA_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node), depth));
    } else if (IsOp("(")) {
      JINJA_ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kCall, "", std::move(node), depth));
    } else {
      return node;
    }
  }
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseSubscript(ExprPtr node, int depth) {
  const int line = Next().line;
  ExprPtr parts[3];
  bool slice = false;
  for (int i = 0; i < 3; ++i) {
    if (!IsOp(":") && !IsOp("]")) {
      JINJA_ASSIGN_OR_RETURN(parts[i], ParseExpression(depth + 1));
    }
    if (i == 2 || !IsOp(":")) break;
    ++pos_;
    slice = true;
  }
  JINJA_RETURN_IF_ERROR(ExpectOp("]"));
  ExprPtr sub = NewExpr(slice ? Expr::Kind::kSlice : Expr::Kind::kSubscript, line);
  sub->args.push_back(std::move(node));
  if (!slice && parts[0] == nullptr) return Error(Peek(), "empty subscript []");
  for (int i = 0; i < (slice ? 3 : 1); ++i) sub->args.push_back(std::move(parts[i]));
  return sub;
}

// At "(": arguments for a call, filter or test on `subject`.
absl::StatusOr<ExprPtr> ExpressionParser::ParseCall(Expr::Kind kind, std::string name, ExprPtr subject, int depth) {
  const int line = Peek().line;
  ExprPtr call = NewExpr(kind, line, std::move(name));
  call->args.push_back(std::move(subject));
  JINJA_RETURN_IF_ERROR(ExpectOp("("));
  while (!IsOp(")")) {
    if (Peek().type == T::kName && IsOp("=", 1)) {
      std::string key = Next().text;
      ++pos_;
      JINJA_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(depth + 1));
      call->kwargs.emplace_back(std::move(key), std::move(value));
    } else {
      if (!call->kwargs.empty()) return Error(Peek(), "positional argument after keyword argument");
      JINJA_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(depth + 1));
      call->args.push_back(std::move(value));
    }
    if (!IsOp(",")) break;
    ++pos_;
  }
  JINJA_RETURN_IF_ERROR(ExpectOp(")"));
  return call;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseFilters(ExprPtr node, int depth, bool first_without_pipe) {
  while (true) {
    if (IsOp("|") || first_without_pipe) {
      if (!first_without_pipe) ++pos_;
      first_without_pipe = false;
      const int line = Peek().line;
      JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
      if (IsOp("(")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kFilter, name, std::move(node), depth));
      } else {
        ExprPtr f = NewExpr(Expr::Kind::kFilter, line, std::move(name));
        f->args.push_back(std::move(node));
        node = std::move(f);
      }
    } else if (IsName("is")) {
      JINJA_ASSIGN_OR_RETURN(node, ParseTest(std::move(node), depth));
    } else if (IsOp("(")) {
      JINJA_ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kCall, "", std::move(node), depth));
    } else {
      return node;
    }
  }
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseTest(ExprPtr node, int depth) {
  const int line = Next().line;
  const bool negated = IsName("not");
  if (negated) ++pos_;
  JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
  ExprPtr test;
  if (IsOp("(")) {
    JINJA_ASSIGN_OR_RETURN(test, ParseCall(Expr::Kind::kTest, name, std::move(node), depth));
  } else {
    test = NewExpr(Expr::Kind::kTest, line, name);
    test->args.push_back(std::move(node));
    const Token& t = Peek();
    const bool starts_arg = t.type == T::kName || t.type == T::kString || t.type == T::kInt ||
                            t.type == T::kFloat || IsOp("[") || IsOp("{");
    if (starts_arg && !IsName("else") && !IsName("or") && !IsName("and")) {
      if (IsName("is")) return Error(t, "tests cannot be chained with 'is'");
      JINJA_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary(depth));
      JINJA_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg), depth));
      test->args.push_back(std::move(arg));
    }
  }
  test->line = line;
  test->negated = negated;
  return test;
}

}  // namespace rigtune::data::jinja
