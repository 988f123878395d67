#include "worker/data/jinja/parser.h"

#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/data/jinja/expression_parser.h"
#include "worker/data/jinja/status_macros.h"

namespace rigtune::data::jinja {
namespace {

Stmt NewStmt(Stmt::Kind kind, int line) {
  Stmt s;
  s.kind = kind;
  s.line = line;
  return s;
}

// The statement half: text, {{ }} and {% %} blocks through their end tags.
class Parser : public ExpressionParser {
 public:
  using ExpressionParser::ExpressionParser;

  absl::StatusOr<Body> ParseTemplate() {
    std::string end;
    return ParseUntil({}, &end, 0);
  }

 private:

  // Statements up to a {% tag %} named in `ends`; leaves that name as the
  // next token and stores it in *end. With no `ends`, up to the end.
  absl::StatusOr<Body> ParseUntil(std::initializer_list<absl::string_view> ends, std::string* end,
                                  int depth) {
    JINJA_RETURN_IF_ERROR(Deeper(depth));
    const int open_line = pos_ > 0 ? tokens_[pos_ - 1].line : 1;
    Body body;
    while (true) {
      const Token& t = Peek();
      if (t.type == T::kEnd) {
        if (ends.size() == 0) return body;
        absl::string_view closing = *ends.begin();
        for (absl::string_view e : ends) {
          if (e.substr(0, 3) == "end") closing = e;
        }
        return Error(t, absl::StrCat("unexpected end of template: the block opened on line ",
                                     open_line, " needs {% ", closing, " %}"));
      }
      if (t.type == T::kText) {
        Stmt s = NewStmt(Stmt::Kind::kText, t.line);
        s.text = t.text;
        body.push_back(std::move(s));
        ++pos_;
      } else if (t.type == T::kVarBegin) {
        ++pos_;
        Stmt s = NewStmt(Stmt::Kind::kOutput, t.line);
        JINJA_ASSIGN_OR_RETURN(s.expr, ParseExpression(depth));
        if (Peek().type != T::kVarEnd) return Expected("'}}'");
        ++pos_;
        body.push_back(std::move(s));
      } else if (t.type == T::kBlockBegin) {
        const Token& name = Peek(1);
        for (absl::string_view e : ends) {
          if (name.type == T::kName && name.text == e) {
            pos_ += 1;
            *end = name.text;
            return body;
          }
        }
        JINJA_ASSIGN_OR_RETURN(Stmt s, ParseStatement(depth));
        body.push_back(std::move(s));
      } else {
        return Error(t, absl::StrCat("unexpected ", Describe(t)));
      }
    }
  }

  // At "{%": one block statement, through its end tag.
  absl::StatusOr<Stmt> ParseStatement(int depth) {
    ++pos_;
    const Token& tag = Peek();
    if (tag.type != T::kName) return Expected("a tag name after '{%'");
    const std::string name = Next().text;
    Stmt s = NewStmt(Stmt::Kind::kText, tag.line);
    std::string end;
    if (name == "if") return ParseIf(tag.line, depth);
    if (name == "for") {
      s.kind = Stmt::Kind::kFor;
      JINJA_RETURN_IF_ERROR(ParseTargets(&s.targets));
      if (!IsName("in")) return Expected("'in'");
      ++pos_;
      JINJA_ASSIGN_OR_RETURN(s.expr, ParseOr(depth));
      if (IsName("if")) {
        ++pos_;
        JINJA_ASSIGN_OR_RETURN(s.cond, ParseOr(depth));
      }
      if (IsName("recursive")) return Error(Peek(), "recursive for loops are not supported");
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      JINJA_ASSIGN_OR_RETURN(s.body, ParseUntil({"endfor", "else"}, &end, depth + 1));
      if (end == "else") {
        JINJA_RETURN_IF_ERROR(EndTag());
        JINJA_ASSIGN_OR_RETURN(s.else_body, ParseUntil({"endfor"}, &end, depth + 1));
      }
      JINJA_RETURN_IF_ERROR(EndTag());
      return s;
    }
    if (name == "set") {
      JINJA_RETURN_IF_ERROR(ParseTargets(&s.targets));
      if (s.targets.size() == 1 && IsOp(".")) {
        ++pos_;
        JINJA_ASSIGN_OR_RETURN(s.text, ExpectName());
      }
      if (IsOp("=")) {
        ++pos_;
        s.kind = Stmt::Kind::kSet;
        JINJA_ASSIGN_OR_RETURN(s.expr, ParseTuple(depth));
        JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
        return s;
      }
      if (s.targets.size() != 1 || !s.text.empty()) return Expected("'='");
      s.kind = Stmt::Kind::kSetBlock;
      if (IsOp("|")) {
        JINJA_ASSIGN_OR_RETURN(s.filter, ParseFilterChain(tag.line, depth));
      }
      JINJA_RETURN_IF_ERROR(ParseBody("endset", depth, &s));
      return s;
    }
    if (name == "macro") {
      s.kind = Stmt::Kind::kMacro;
      JINJA_ASSIGN_OR_RETURN(s.text, ExpectName());
      JINJA_RETURN_IF_ERROR(ParseParams(&s.params, depth));
      JINJA_RETURN_IF_ERROR(ParseBody("endmacro", depth, &s));
      return s;
    }
    if (name == "call") {
      s.kind = Stmt::Kind::kCallBlock;
      if (IsOp("(")) JINJA_RETURN_IF_ERROR(ParseParams(&s.params, depth));
      JINJA_ASSIGN_OR_RETURN(s.expr, ParseExpression(depth));
      if (s.expr->kind != Expr::Kind::kCall) return Error(tag, "{% call %} needs a macro call");
      JINJA_RETURN_IF_ERROR(ParseBody("endcall", depth, &s));
      return s;
    }
    if (name == "filter") {
      s.kind = Stmt::Kind::kFilterBlock;
      JINJA_ASSIGN_OR_RETURN(s.filter, ParseFilterChain(tag.line, depth));
      JINJA_RETURN_IF_ERROR(ParseBody("endfilter", depth, &s));
      return s;
    }
    if (name == "generation") {
      s.kind = Stmt::Kind::kGeneration;
      JINJA_RETURN_IF_ERROR(ParseBody("endgeneration", depth, &s));
      return s;
    }
    if (name == "break" || name == "continue") {
      s.kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    return Error(tag, absl::StrCat("unknown tag '", name, "'"));
  }

  // From a block's "%}" through its end tag: the body into s->body.
  absl::Status ParseBody(absl::string_view end_name, int depth, Stmt* s) {
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    JINJA_ASSIGN_OR_RETURN(s->body, ParseUntil({end_name}, &end, depth + 1));
    return EndTag();
  }

  // After an end tag's name (endfor, endmacro name, else ...): its "%}".
  absl::Status EndTag() {
    ++pos_;
    if (Peek().type == T::kName) ++pos_;  // {% endmacro name %}
    return ExpectBlockEnd();
  }

  // After "if" / "elif": condition, body, then elif / else / endif.
  absl::StatusOr<Stmt> ParseIf(int line, int depth) {
    Stmt s = NewStmt(Stmt::Kind::kIf, line);
    JINJA_ASSIGN_OR_RETURN(s.expr, ParseExpression(depth));
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    JINJA_ASSIGN_OR_RETURN(s.body, ParseUntil({"elif", "else", "endif"}, &end, depth + 1));
    if (end == "elif") {
      const int elif_line = Next().line;
      JINJA_ASSIGN_OR_RETURN(Stmt elif, ParseIf(elif_line, depth + 1));
      s.else_body.push_back(std::move(elif));
      return s;
    }
    if (end == "else") {
      JINJA_RETURN_IF_ERROR(EndTag());
      JINJA_ASSIGN_OR_RETURN(s.else_body, ParseUntil({"endif"}, &end, depth + 1));
    }
    JINJA_RETURN_IF_ERROR(EndTag());
    return s;
  }

  absl::Status ParseTargets(std::vector<std::string>* targets) {
    const bool paren = IsOp("(");
    if (paren) ++pos_;
    do {
      JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
      targets->push_back(std::move(name));
    } while (IsOp(",") && (++pos_, true));
    return paren ? ExpectOp(")") : absl::OkStatus();
  }

  absl::Status ParseParams(std::vector<std::pair<std::string, ExprPtr>>* params, int depth) {
    JINJA_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
      ExprPtr def;
      if (IsOp("=")) {
        ++pos_;
        JINJA_ASSIGN_OR_RETURN(def, ParseExpression(depth + 1));
      }
      params->emplace_back(std::move(name), std::move(def));
      if (!IsOp(",")) break;
      ++pos_;
    }
    return ExpectOp(")");
  }

  // "| f(args) | g" (or "f | g" after {% filter) applied to the block body.
  absl::StatusOr<ExprPtr> ParseFilterChain(int line, int depth) {
    ExprPtr value = NewExpr(Expr::Kind::kName, line, kBlockValueName);
    if (!IsOp("|")) {
      // {% filter name %}: pretend a '|' came first.
      return ParseFilters(std::move(value), depth, /*first_without_pipe=*/true);
    }
    return ParseFilters(std::move(value), depth, false);
  }
};

}  // namespace

absl::StatusOr<Body> Parse(const std::vector<Token>& tokens) {
  return Parser(tokens).ParseTemplate();
}

}  // namespace rigtune::data::jinja
