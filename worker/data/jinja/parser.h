// Parser: turns the lexer's tokens into statements (ast.h); expressions
// are parsed by expression_parser.h with Jinja's operator precedence.
//
//   auto body = Parse(*Lex("{% for m in messages %}{{ m.content }}{% endfor %}"));
#ifndef RIGTUNE_WORKER_DATA_JINJA_PARSER_H_
#define RIGTUNE_WORKER_DATA_JINJA_PARSER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/jinja/ast.h"
#include "worker/data/jinja/lexer.h"

namespace rigtune::data::jinja {

// Fails with InvalidArgument "line N: ..." naming what was expected, an
// unknown or unclosed block tag, or nesting deeper than 200 levels.
absl::StatusOr<Body> Parse(const std::vector<Token>& tokens);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_PARSER_H_
