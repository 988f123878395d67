// The parsed form of a template: statements (text, {{ }} output, {% %}
// blocks) holding expressions. Built by parser.h, run by evaluator.h.
#ifndef RIGTUNE_WORKER_DATA_JINJA_AST_H_
#define RIGTUNE_WORKER_DATA_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "worker/data/jinja/value.h"

namespace rigtune::data::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,      // literal
    kName,         // name
    kList,         // [args...]; tuples are lists
    kDict,         // {kwargs keys evaluated from args[2i], values args[2i+1]}
    kAttr,         // args[0].name
    kSubscript,    // args[0][args[1]]
    kSlice,        // args[0][args[1]:args[2]:args[3]] (null parts allowed)
    kCall,         // args[0](args[1:]..., kwargs)
    kFilter,       // args[0] | name(args[1:]..., kwargs)
    kTest,         // args[0] is [not] name(args[1:]...)
    kUnary,        // name in {"not", "-", "+"} applied to args[0]
    kBinary,       // args[0] name args[1]; name is an operator, "in", "not in", "and", "or"
    kConditional,  // args[1] if args[0] else args[2] (args[2] may be null)
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // kTest: "is not"
};

struct Stmt;
using Body = std::vector<Stmt>;

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // if expr: body, else: else_body (elif nests an kIf there)
    kFor,          // for targets in expr [if cond]: body, else: else_body
    kSet,          // set targets = expr, or set targets[0].attr = expr
    kSetBlock,     // set targets[0] [| filter] %}body{% endset
    kMacro,        // macro name(params): body
    kCallBlock,    // call(params) expr: body (the body is `caller`)
    kFilterBlock,  // filter f: body
    kGeneration,   // generation: body (assistant-produced text)
    kBreak,
    kContinue,
  };
  Kind kind;
  int line = 0;
  std::string text;              // kText; kMacro name; kSet attribute name
  ExprPtr expr;                  // value, condition, iterable, call
  ExprPtr cond;                  // kFor filter
  ExprPtr filter;                // kSetBlock / kFilterBlock: a kFilter chain on kBlockValueName
  std::vector<std::string> targets;
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro, kCallBlock; null = no default
  Body body;
  Body else_body;
};

// The name a filter-block's filter chain reads the rendered body from.
inline constexpr char kBlockValueName[] = " block";

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_AST_H_
