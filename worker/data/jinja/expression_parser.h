// ExpressionParser: the expression half of the parser (parser.h), with the
// token cursor both halves share. Jinja's precedence, loosest first:
// `a if b else c` < or < and < not < comparisons and `in` < + - < ~ <
// * / // % < ** < unary - < postfix (. [] ()) and filters / tests, so
// `a + b | trim` trims only b.
#ifndef RIGTUNE_WORKER_DATA_JINJA_EXPRESSION_PARSER_H_
#define RIGTUNE_WORKER_DATA_JINJA_EXPRESSION_PARSER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/data/jinja/ast.h"
#include "worker/data/jinja/lexer.h"

namespace rigtune::data::jinja {

ExprPtr NewExpr(Expr::Kind kind, int line, std::string name = "");

class ExpressionParser {
 public:
  explicit ExpressionParser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  absl::StatusOr<ExprPtr> ParseExpression(int depth);
  // expr or "a, b" (a tuple, as in {% set x = a, b %}).
  absl::StatusOr<ExprPtr> ParseTuple(int depth);
  // An expression without the trailing `if ... else` (for-loop iterables).
  absl::StatusOr<ExprPtr> ParseOr(int depth);
  // The filters, tests and calls after `node`; with first_without_pipe the
  // first filter name stands without its '|' ({% filter upper %}).
  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr node, int depth, bool first_without_pipe);

 protected:
  static constexpr int kMaxDepth = 200;
  using T = Token::Type;
  static std::string Describe(const Token& t);

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  bool IsOp(absl::string_view op, size_t ahead = 0) const {
    return Peek(ahead).type == T::kOperator && Peek(ahead).text == op;
  }
  bool IsName(absl::string_view name, size_t ahead = 0) const {
    return Peek(ahead).type == T::kName && Peek(ahead).text == name;
  }
  absl::Status Error(const Token& at, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("line ", at.line, ": ", what));
  }
  absl::Status Expected(absl::string_view what) const {
    return Error(Peek(), absl::StrCat("expected ", what, ", got ", Describe(Peek())));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Expected(absl::StrCat("'", op, "'"));
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != T::kBlockEnd) return Expected("'%}'");
    ++pos_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != T::kName) return Expected("a name");
    return Next().text;
  }
  absl::Status Deeper(int depth) const {
    if (depth > kMaxDepth) return Error(Peek(), "template nests deeper than 200 levels");
    return absl::OkStatus();
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;

 private:
  ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right);
  absl::StatusOr<ExprPtr> ParseAnd(int depth);
  absl::StatusOr<ExprPtr> ParseNot(int depth);
  absl::StatusOr<ExprPtr> ParseCompare(int depth);
  bool IsComparison() const;
  absl::StatusOr<ExprPtr> ParseMath(int depth, int level);
  absl::StatusOr<ExprPtr> ParseUnary(int depth, bool with_filter);
  absl::StatusOr<ExprPtr> ParsePrimary(int depth);
  absl::Status ParseItems(absl::string_view close, int depth, std::vector<ExprPtr>* items,
                          bool leading_comma = true);
  ExprPtr Literal(Value v, int line);
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node, int depth);
  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node, int depth);
  absl::StatusOr<ExprPtr> ParseCall(Expr::Kind kind, std::string name, ExprPtr subject, int depth);
  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node, int depth);
};

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_EXPRESSION_PARSER_H_
