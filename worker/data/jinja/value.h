// Value: what a chat template computes with. Python's data model restricted
// to what JSON and Jinja need: undefined, None, bool, int, float, str, list,
// dict (insertion-ordered, string keys), namespace (the one mutable object,
// from namespace()) and callables (macros, globals, bound methods).
//
// Lists and dicts are immutable once built (transformers renders in an
// ImmutableSandboxedEnvironment) and shared, so copying a Value is cheap.
// Text conversions follow Python: Str() is str(), Repr() is repr(), so
// `{{ [1, 'a'] }}` renders "[1, 'a']" and `{{ none }}` renders "None".
#ifndef RIGTUNE_WORKER_DATA_JINJA_VALUE_H_
#define RIGTUNE_WORKER_DATA_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace rigtune::data::jinja {

class Value;
using ValueList = std::vector<Value>;
using ValueDict = std::vector<std::pair<std::string, Value>>;

// Arguments of a call: positional, then keyword (in call order).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<absl::StatusOr<Value>(const CallArgs&)>;

struct JsonOptions {
  bool ensure_ascii = false;
  int indent = -1;  // < 0: one line
  std::string indent_text;  // used instead of `indent` spaces when set
  std::string item_separator;  // defaults: ", " one line, "," indented
  std::string key_separator = ": ";
  bool sort_keys = false;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  Value(bool b) : data_(b) {}                 // NOLINT: implicit like Python literals
  Value(int64_t i) : data_(i) {}              // NOLINT
  Value(int i) : data_(int64_t{i}) {}         // NOLINT
  Value(double d) : data_(d) {}               // NOLINT
  Value(std::string s) : data_(std::move(s)) {}  // NOLINT
  Value(const char* s) : data_(std::string(s)) {}  // NOLINT

  static Value None() { return Value(nullptr); }
  // An undefined value remembering what was looked up, for error messages.
  static Value Undefined(std::string name);
  static Value List(ValueList items);
  static Value Dict(ValueDict items);
  static Value Namespace(ValueDict items);
  static Value Callable(std::string name, Function fn);
  static Value FromJson(const nlohmann::ordered_json& json);
  // A string marked safe (Jinja's Markup, from |safe or |escape): adding a
  // plain string to it HTML-escapes that string, as markupsafe does.
  static Value Markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  bool is_markup() const { return markup_ && is_string(); }

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_callable() const { return kind() == Kind::kFunction; }
  bool is_namespace() const { return is_dict() && std::get<DictPtr>(data_)->is_namespace; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const;     // bool or int
  double as_double() const;   // bool, int or float
  const std::string& str() const { return std::get<std::string>(data_); }
  const ValueList& list() const { return *std::get<ListPtr>(data_); }
  const ValueDict& dict() const { return std::get<DictPtr>(data_)->items; }
  const std::string& undefined_name() const { return std::get<UndefinedName>(data_).name; }
  const std::string& function_name() const { return std::get<FunctionPtr>(data_)->name; }
  absl::StatusOr<Value> Call(const CallArgs& args) const { return std::get<FunctionPtr>(data_)->fn(args); }

  // The entry for `key`, or nullptr.
  const Value* Find(absl::string_view key) const;
  // Sets a namespace attribute (the only mutation templates may do).
  void SetNamespaceAttr(const std::string& key, Value value) const;
  // Same object (Python `is`): identity for containers, equality for scalars.
  bool SameAs(const Value& other) const;

  bool Truthy() const;
  std::string Str() const;   // str(x); undefined is ""
  std::string Repr() const;  // repr(x)
  const char* TypeName() const;  // Python's type name: "str", "dict", ...
  // json.dumps(x, ...). Fails on undefined or callables.
  absl::StatusOr<std::string> ToJson(const JsonOptions& options) const;

  friend bool operator==(const Value& a, const Value& b);
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  struct UndefinedName {
    std::string name;
  };
  struct DictData {
    ValueDict items;
    bool is_namespace = false;
  };
  struct FunctionData {
    std::string name;
    Function fn;
  };
  using ListPtr = std::shared_ptr<const ValueList>;
  using DictPtr = std::shared_ptr<DictData>;
  using FunctionPtr = std::shared_ptr<const FunctionData>;
  explicit Value(std::nullptr_t) : data_(nullptr) {}

  absl::Status AppendJson(const JsonOptions& options, int depth, std::string* out) const;

  // Order matches Kind.
  std::variant<UndefinedName, std::nullptr_t, bool, int64_t, double, std::string, ListPtr,
               DictPtr, FunctionPtr>
      data_;
  bool markup_ = false;
};

// Python ordering (<) for numbers, strings and lists; InvalidArgument for
// other combinations, as Python raises TypeError.
absl::StatusOr<bool> LessThan(const Value& a, const Value& b);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_VALUE_H_
