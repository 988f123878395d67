// Lexer: splits template source into text and the tokens inside {{ }} and
// {% %} tags, applying Jinja's whitespace control the way transformers
// configures its environment (trim_blocks and lstrip_blocks on,
// keep_trailing_newline off). See Note [Whitespace control].
//
//   Lex("a {%- if x %}\n  b") -> text "a", block begin, name "if", name "x",
//                                block end, text "  b"
#ifndef RIGTUNE_WORKER_DATA_JINJA_LEXER_H_
#define RIGTUNE_WORKER_DATA_JINJA_LEXER_H_

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace rigtune::data::jinja {

struct Token {
  enum class Type {
    kText,        // raw template text (already whitespace-controlled)
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,        // identifier or keyword
    kString,      // string literal, value unescaped
    kInt,
    kFloat,
    kOperator,    // + - * / // % ** ~ ( ) [ ] { } , . : | = == != < > <= >=
    kEnd,
  };
  Type type;
  std::string text;  // the name, operator, literal value or raw text
  int line = 1;
};

// Fails with InvalidArgument "line N: ..." on an unterminated tag, comment
// or string, or a character that no token starts with.
absl::StatusOr<std::vector<Token>> Lex(absl::string_view source);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_LEXER_H_
