#include "worker/data/jinja/filters.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "worker/data/jinja/call_args.h"
#include "worker/data/jinja/methods.h"
#include "worker/data/jinja/operators.h"
#include "worker/data/jinja/python_text.h"
#include "worker/data/jinja/status_macros.h"

namespace rigtune::data::jinja {
namespace {

constexpr absl::string_view kFilters[] = {
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
    "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr",
    "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper"};
constexpr absl::string_view kTests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float",
    "ge", "gt", "in", "integer", "iterable", "le", "lower", "lt", "mapping", "ne", "none",
    "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper",
    "==", "!=", "<", ">", "<=", ">="};

CallArgs Rest(const CallArgs& args, size_t skip) {
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + std::min(skip, args.positional.size()),
                         args.positional.end());
  rest.keyword = args.keyword;
  return rest;
}

// item.a.b as Jinja's attribute filters read it: entries, list indices,
// then attributes.
absl::StatusOr<Value> Attribute(const Value& item, const std::string& path) {
  Value v = item;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    int64_t index = 0;
    if (absl::SimpleAtoi(part, &index) && v.is_list()) {
      JINJA_ASSIGN_OR_RETURN(v, GetItem(v, Value(index)));
    } else if (v.is_dict() && !v.is_namespace()) {
      JINJA_ASSIGN_OR_RETURN(v, GetItem(v, Value(std::string(part))));
    } else {
      JINJA_ASSIGN_OR_RETURN(v, GetAttr(v, std::string(part)));
    }
  }
  return v;
}

// Sort key: strings lower-cased unless case_sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  return v.is_string() && !case_sensitive ? Value(PythonLower(v.str())) : v;
}

absl::StatusOr<ValueList> Sorted(ValueList items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    absl::StatusOr<bool> less = reverse ? LessThan(keys[b], keys[a]) : LessThan(keys[a], keys[b]);
    if (!less.ok()) error = less.status();
    return less.ok() && *less;
  });
  JINJA_RETURN_IF_ERROR(error);
  ValueList out;
  for (size_t i : order) out.push_back(items[i]);
  return out;
}

absl::StatusOr<Value> ToJsonFilter(const Value& subject, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a,
                         BindArgs(args, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson"));
  JsonOptions options;
  options.ensure_ascii = a[0].Truthy();
  if (a[1].is_string()) {
    options.indent_text = a[1].str();
    options.indent = 0;
  } else {
    JINJA_ASSIGN_OR_RETURN(int64_t indent, IntArg(a[1], "indent", -1));
    options.indent = static_cast<int>(std::min<int64_t>(indent, 64));
  }
  if (a[2].is_list() && a[2].list().size() == 2 && a[2].list()[0].is_string() &&
      a[2].list()[1].is_string()) {
    options.item_separator = a[2].list()[0].str();
    options.key_separator = a[2].list()[1].str();
  } else if (!a[2].is_undefined() && !a[2].is_none()) {
    return absl::InvalidArgumentError("tojson: separators must be a pair of strings");
  }
  options.sort_keys = a[3].Truthy();
  JINJA_ASSIGN_OR_RETURN(std::string json, subject.ToJson(options));
  return Value(std::move(json));
}

absl::StatusOr<Value> IndentFilter(const Value& subject, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"width", "first", "blank"}, "indent"));
  std::string pad;
  if (a[0].is_string()) {
    pad = a[0].str();
  } else {
    JINJA_ASSIGN_OR_RETURN(int64_t width, IntArg(a[0], "width", 4));
    pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width, 0, 1024)), ' ');
  }
  const std::string text = subject.Str() + "\n";
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  lines.pop_back();  // splitlines() drops the part after the final newline
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    const bool indent_line = i == 0 ? a[1].Truthy() : (a[2].Truthy() || !lines[i].empty());
    if (indent_line) out += pad;
    out += lines[i];
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> IntFilter(const Value& subject, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"default", "base"}, "int"));
  const Value fallback = a[0].is_undefined() ? Value(int64_t{0}) : a[0];
  if (subject.is_int() || subject.is_bool()) return Value(subject.as_int());
  if (subject.is_float()) return Value(static_cast<int64_t>(subject.as_double()));
  if (subject.is_string()) {
    const std::string s = PythonStrip(subject.str());
    int64_t i = 0;
    double d = 0;
    if (absl::SimpleAtoi(s, &i)) return Value(i);
    if (absl::SimpleAtod(s, &d) && std::isfinite(d)) return Value(static_cast<int64_t>(d));
  }
  return fallback;
}

absl::StatusOr<Value> SelectFilter(absl::string_view name, const Value& subject,
                                   const CallArgs& args) {
  const bool attr = name == "selectattr" || name == "rejectattr";
  const bool keep = name == "select" || name == "selectattr";
  ValueList items;  // Jinja skips a falsy sequence (e.g. tools=None) without iterating it
  if (subject.Truthy()) {
    JINJA_ASSIGN_OR_RETURN(items, Iterate(subject));
  }
  size_t next = 0;
  std::string path;
  if (attr) {
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": needs an attribute name"));
    }
    path = args.positional[next++].str();
  }
  std::string test;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": the test name must be a string"));
    }
    test = args.positional[next++].str();
    if (!IsKnownTest(test)) return absl::InvalidArgumentError(absl::StrCat("no test named '", test, "'"));
  }
  const CallArgs test_args = Rest(args, next);
  ValueList out;
  for (const Value& item : items) {
    Value v = item;
    if (attr) {
      JINJA_ASSIGN_OR_RETURN(v, Attribute(item, path));
    }
    bool passed = v.Truthy();
    if (!test.empty()) {
      JINJA_ASSIGN_OR_RETURN(passed, ApplyTest(test, v, test_args));
    }
    if (passed == keep) out.push_back(item);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> MapFilter(const Value& subject, const CallArgs& args) {
  ValueList items;  // as in select: a falsy sequence maps to nothing
  if (subject.Truthy()) {
    JINJA_ASSIGN_OR_RETURN(items, Iterate(subject));
  }
  ValueList out;
  for (const auto& [key, value] : args.keyword) {
    if (key != "attribute" && key != "default") {
      return absl::InvalidArgumentError(absl::StrCat("map() got an unexpected keyword argument '", key, "'"));
    }
  }
  if (args.positional.empty()) {
    const Value* path = nullptr;
    const Value* fallback = nullptr;
    for (const auto& [key, value] : args.keyword) (key == "attribute" ? path : fallback) = &value;
    if (path == nullptr || !path->is_string()) {
      return absl::InvalidArgumentError("map: give a filter name or attribute=\"name\"");
    }
    for (const Value& item : items) {
      JINJA_ASSIGN_OR_RETURN(Value v, Attribute(item, path->str()));
      out.push_back(v.is_undefined() && fallback ? *fallback : v);
    }
    return Value::List(std::move(out));
  }
  if (!args.positional[0].is_string() || !IsKnownFilter(args.positional[0].str())) {
    return absl::InvalidArgumentError(absl::StrCat("map: no filter named ", args.positional[0].Repr()));
  }
  const CallArgs rest = Rest(args, 1);
  for (const Value& item : items) {
    JINJA_ASSIGN_OR_RETURN(Value v, ApplyFilter(args.positional[0].str(), item, rest));
    out.push_back(std::move(v));
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> SortFilter(absl::string_view name, const Value& subject, const CallArgs& args) {
  if (name == "dictsort") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a,
                           BindArgs(args, {"case_sensitive", "by", "reverse"}, "dictsort"));
    if (!subject.is_dict()) return absl::InvalidArgumentError("dictsort: needs a mapping");
    const bool by_value = a[1].is_string() && a[1].str() == "value";
    ValueList items;
    std::vector<Value> keys;
    for (const auto& [key, value] : subject.dict()) {
      items.push_back(Value::List({Value(key), value}));
      keys.push_back(SortKey(by_value ? value : Value(key), a[0].Truthy()));
    }
    JINJA_ASSIGN_OR_RETURN(ValueList sorted, Sorted(std::move(items), keys, a[2].Truthy()));
    return Value::List(std::move(sorted));
  }
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a,
                         BindArgs(args, {"reverse", "case_sensitive", "attribute"}, name));
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(subject));
  std::vector<Value> keys;
  for (const Value& item : items) {
    Value key = item;
    if (a[2].is_string()) {
      JINJA_ASSIGN_OR_RETURN(key, Attribute(item, a[2].str()));
    }
    keys.push_back(SortKey(key, a[1].Truthy()));
  }
  if (name == "sort") {
    JINJA_ASSIGN_OR_RETURN(ValueList sorted, Sorted(std::move(items), keys, a[0].Truthy()));
    return Value::List(std::move(sorted));
  }
  // unique: first occurrence of each key, in order.
  ValueList out;
  std::vector<Value> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    if (std::find(seen.begin(), seen.end(), keys[i]) != seen.end()) continue;
    seen.push_back(keys[i]);
    out.push_back(items[i]);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> Aggregate(absl::string_view name, const Value& subject, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(subject));
  if (name == "sum") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"attribute", "start"}, "sum"));
    Value total = a[1].is_undefined() ? Value(int64_t{0}) : a[1];
    for (const Value& item : items) {
      Value v = item;
      if (a[0].is_string()) {
        JINJA_ASSIGN_OR_RETURN(v, Attribute(item, a[0].str()));
      }
      JINJA_ASSIGN_OR_RETURN(total, BinaryOp("+", total, v));
    }
    return total;
  }
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"case_sensitive", "attribute"}, name));
  Value best;
  Value best_key;
  for (const Value& item : items) {
    Value key = item;
    if (a[1].is_string()) {
      JINJA_ASSIGN_OR_RETURN(key, Attribute(item, a[1].str()));
    }
    key = SortKey(key, a[0].Truthy());
    if (!best.is_undefined()) {
      JINJA_ASSIGN_OR_RETURN(bool less, name == "min" ? LessThan(key, best_key) : LessThan(best_key, key));
      if (!less) continue;
    }
    best = item;
    best_key = key;
  }
  return best.is_undefined() ? Value::Undefined(absl::StrCat(name, "(): empty sequence")) : best;
}

}  // namespace

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

namespace {

absl::StatusOr<Value> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return Value(int64_t{0});
    case Value::Kind::kString: return Value(static_cast<int64_t>(CodePointCount(v.str())));
    case Value::Kind::kList: return Value(static_cast<int64_t>(v.list().size()));
    case Value::Kind::kDict: return Value(static_cast<int64_t>(v.dict().size()));
    default:
      return absl::InvalidArgumentError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

}  // namespace

bool IsKnownFilter(absl::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool IsKnownTest(absl::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

absl::StatusOr<Value> ApplyFilter(absl::string_view name, const Value& subject, const CallArgs& args) {
  if (name == "default" || name == "d") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"default_value", "boolean"}, name));
    const bool use_default = a[1].Truthy() ? !subject.Truthy() : subject.is_undefined();
    if (!use_default) return subject;
    return a[0].is_undefined() ? Value("") : a[0];
  }
  if (name == "tojson") return ToJsonFilter(subject, args);
  if (name == "indent") return IndentFilter(subject, args);
  if (name == "int") return IntFilter(subject, args);
  if (name == "map") return MapFilter(subject, args);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return SelectFilter(name, subject, args);
  }
  if (name == "sort" || name == "dictsort" || name == "unique") return SortFilter(name, subject, args);
  if (name == "sum" || name == "min" || name == "max") return Aggregate(name, subject, args);
  if (name == "trim") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"chars"}, "trim"));
    if (a[0].is_string()) return Value(PythonStrip(subject.Str(), StripSide::kBoth, a[0].str()));
    return Value(PythonStrip(subject.Str()));
  }
  if (name == "replace") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"old", "new", "count"}, "replace"));
    JINJA_ASSIGN_OR_RETURN(int64_t count, IntArg(a[2], "count", -1));
    std::optional<std::string> out = PythonReplace(subject.Str(), a[0].Str(), a[1].Str(), count);
    if (!out) return absl::InvalidArgumentError("replace: the result would be larger than 16 MiB");
    return Value(std::move(*out));
  }
  if (name == "join") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"d", "attribute"}, "join"));
    JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(subject));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      Value v = items[i];
      if (a[1].is_string()) {
        JINJA_ASSIGN_OR_RETURN(v, Attribute(v, a[1].str()));
      }
      absl::StrAppend(&out, i ? a[0].Str() : "", v.Str());
    }
    return Value(std::move(out));
  }
  if (name == "float") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"default"}, "float"));
    double d = 0;
    if (subject.is_number()) return Value(subject.as_double());
    if (subject.is_string() && absl::SimpleAtod(PythonStrip(subject.str()), &d)) return Value(d);
    return a[0].is_undefined() ? Value(0.0) : a[0];
  }
  if (name == "round") {
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"precision", "method"}, "round"));
    JINJA_ASSIGN_OR_RETURN(int64_t precision, IntArg(a[0], "precision", 0));
    if (!subject.is_number()) return absl::InvalidArgumentError("round: needs a number");
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const std::string method = a[1].is_string() ? a[1].str() : "common";
    const double x = subject.as_double() * scale;
    const double r = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::nearbyint(x);
    return Value(r / scale);
  }
  JINJA_RETURN_IF_ERROR(BindArgs(args, {}, name).status());
  if (name == "safe") return subject.is_markup() ? subject : Value::Markup(subject.Str());
  if (name == "string") return Value(subject.Str());
  if (name == "upper") return Value(PythonUpper(subject.Str()));
  if (name == "lower") return Value(PythonLower(subject.Str()));
  if (name == "title") return Value(PythonTitle(subject.Str()));
  if (name == "capitalize") return Value(PythonCapitalize(subject.Str()));
  if (name == "escape" || name == "e") {
    return subject.is_markup() ? subject : Value::Markup(HtmlEscape(subject.Str()));
  }
  if (name == "length" || name == "count") return Length(subject);
  if (name == "abs") {
    if (!subject.is_number()) return absl::InvalidArgumentError("abs: needs a number");
    return subject.is_float() ? Value(std::fabs(subject.as_double())) : Value(static_cast<int64_t>(std::llabs(subject.as_int())));
  }
  if (name == "items") {
    if (subject.is_undefined()) return Value::List({});
    if (!subject.is_dict()) return absl::InvalidArgumentError("items: needs a mapping");
    ValueList out;
    for (const auto& [key, value] : subject.dict()) out.push_back(Value::List({Value(key), value}));
    return Value::List(std::move(out));
  }
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(subject));
  if (name == "list") return Value::List(std::move(items));
  if (name == "first" || name == "last") {
    if (items.empty()) return Value::Undefined(absl::StrCat(name, "(): empty sequence"));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    std::reverse(items.begin(), items.end());
    if (subject.is_string()) {
      std::string s;
      for (const Value& c : items) s += c.str();
      return Value(std::move(s));
    }
    return Value::List(std::move(items));
  }
  return absl::InvalidArgumentError(absl::StrCat("no filter named '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(absl::string_view name, const Value& v, const CallArgs& args) {
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict() && !v.is_namespace();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace());
  if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace());
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "callable") return v.is_callable();
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    const std::string cased = name == "lower" ? PythonLower(v.str()) : PythonUpper(v.str());
    return cased == v.str() && PythonLower(v.str()) != PythonUpper(v.str());
  }
  if (name == "odd" || name == "even") {
    if (!v.is_int() && !v.is_bool()) return absl::InvalidArgumentError(absl::StrCat(name, ": needs an integer"));
    return (v.as_int() % 2 != 0) == (name == "odd");
  }
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"other"}, name));
  const Value& other = a[0];
  if (name == "sameas") return v.SameAs(other);
  if (name == "in") return Contains(other, v);
  if (name == "divisibleby") {
    if (!v.is_number() || !other.is_number() || other.as_double() == 0) {
      return absl::InvalidArgumentError("divisibleby: needs a non-zero number");
    }
    return std::fmod(v.as_double(), other.as_double()) == 0;
  }
  static const std::pair<absl::string_view, absl::string_view> kCompare[] = {
      {"eq", "=="}, {"equalto", "=="}, {"==", "=="}, {"ne", "!="}, {"!=", "!="},
      {"lt", "<"},  {"<", "<"},        {"le", "<="}, {"<=", "<="}, {"gt", ">"},
      {">", ">"},   {"ge", ">="},      {">=", ">="}};
  for (const auto& [test, op] : kCompare) {
    if (test != name) continue;
    JINJA_ASSIGN_OR_RETURN(Value r, BinaryOp(op, v, other));
    return r.Truthy();
  }
  return absl::InvalidArgumentError(absl::StrCat("no test named '", name, "'"));
}

}  // namespace rigtune::data::jinja
