#include "worker/data/jinja/methods.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/data/jinja/call_args.h"
#include "worker/data/jinja/operators.h"
#include "worker/data/jinja/python_text.h"
#include "worker/data/jinja/status_macros.h"

namespace rigtune::data::jinja {
namespace {

Value Unsafe(const Value& object, const std::string& name) {
  const std::string type = object.TypeName();
  return Value::Callable(name, [type, name](const CallArgs&) -> absl::StatusOr<Value> {
    return absl::InvalidArgumentError(absl::StrCat(
        "access to attribute '", name, "' of '", type,
        "' object is unsafe: chat templates cannot modify their inputs"));
  });
}

Value NoAttribute(const Value& object, const std::string& name) {
  return Value::Undefined(
      absl::StrCat("'", object.TypeName(), " object' has no attribute '", name, "'"));
}

// str.startswith / endswith: a prefix or a tuple of them.
absl::StatusOr<Value> Affix(const std::string& s, const CallArgs& args, bool start,
                            const char* name) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"prefix"}, name));
  ValueList candidates = a[0].is_list() ? a[0].list() : ValueList{a[0]};
  for (const Value& c : candidates) {
    if (!c.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " first arg must be str or a tuple of str, not ", c.TypeName()));
    }
    if (start ? absl::StartsWith(s, c.str()) : absl::EndsWith(s, c.str())) return Value(true);
  }
  return Value(false);
}

absl::StatusOr<Value> StripMethod(const std::string& s, const CallArgs& args, StripSide side,
                                  const char* name) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"chars"}, name));
  if (a[0].is_undefined() || a[0].is_none()) return Value(PythonStrip(s, side));
  JINJA_ASSIGN_OR_RETURN(std::string chars, StringArg(a[0], "chars", ""));
  return Value(PythonStrip(s, side, chars));
}

absl::StatusOr<Value> SplitMethod(const std::string& s, const CallArgs& args, bool right,
                                  const char* name) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"sep", "maxsplit"}, name));
  JINJA_ASSIGN_OR_RETURN(int64_t maxsplit, IntArg(a[1], "maxsplit", -1));
  std::vector<std::string> parts;
  if (a[0].is_undefined() || a[0].is_none()) {
    parts = PythonSplit(s, std::nullopt, maxsplit, right);
  } else {
    JINJA_ASSIGN_OR_RETURN(std::string sep, StringArg(a[0], "sep", ""));
    if (sep.empty()) return absl::InvalidArgumentError("empty separator");
    parts = PythonSplit(s, sep, maxsplit, right);
  }
  ValueList out(parts.begin(), parts.end());
  return Value::List(std::move(out));
}

bool AllChars(const std::string& s, int (*pred)(int)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [pred](char c) {
           return pred(static_cast<unsigned char>(c)) != 0;
         });
}

// The bound str method `name`, or nullptr-like undefined when there is none.
Value StringMethod(const std::string& s, const std::string& name) {
  using Fn = std::function<absl::StatusOr<Value>(const CallArgs&)>;
  Fn fn;
  if (name == "startswith" || name == "endswith") {
    const bool start = name == "startswith";
    fn = [s, start](const CallArgs& a) { return Affix(s, a, start, start ? "startswith" : "endswith"); };
  } else if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const StripSide side = name == "strip" ? StripSide::kBoth
                           : name == "lstrip" ? StripSide::kLeft : StripSide::kRight;
    fn = [s, side](const CallArgs& a) { return StripMethod(s, a, side, "strip"); };
  } else if (name == "split" || name == "rsplit") {
    const bool right = name == "rsplit";
    fn = [s, right](const CallArgs& a) { return SplitMethod(s, a, right, "split"); };
  } else if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    std::string (*convert)(std::string_view) = name == "upper"   ? PythonUpper
                                               : name == "lower" ? PythonLower
                                               : name == "title" ? PythonTitle
                                                                 : PythonCapitalize;
    fn = [s, convert, name](const CallArgs& a) -> absl::StatusOr<Value> {
      JINJA_RETURN_IF_ERROR(BindArgs(a, {}, name).status());
      return Value(convert(s));
    };
  } else if (name == "replace") {
    fn = [s](const CallArgs& args) -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"old", "new", "count"}, "replace"));
      JINJA_ASSIGN_OR_RETURN(std::string old_text, StringArg(a[0], "old", ""));
      JINJA_ASSIGN_OR_RETURN(std::string new_text, StringArg(a[1], "new", ""));
      JINJA_ASSIGN_OR_RETURN(int64_t count, IntArg(a[2], "count", -1));
      std::optional<std::string> out = PythonReplace(s, old_text, new_text, count);
      if (!out) return absl::InvalidArgumentError("replace(): the result would be larger than 16 MiB");
      return Value(std::move(*out));
    };
  } else if (name == "format") {
    fn = [s](const CallArgs& a) -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::string out, PythonFormat(s, a));
      return Value(std::move(out));
    };
  } else if (name == "find" || name == "rfind" || name == "count") {
    fn = [s, name](const CallArgs& args) -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"sub"}, name));
      JINJA_ASSIGN_OR_RETURN(std::string sub, StringArg(a[0], "sub", ""));
      if (name == "count") {
        if (sub.empty()) return Value(static_cast<int64_t>(CodePointCount(s) + 1));
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value(n);
      }
      const size_t p = name == "find" ? s.find(sub) : s.rfind(sub);
      if (p == std::string::npos) return Value(int64_t{-1});
      return Value(static_cast<int64_t>(CodePointCount(s.substr(0, p))));
    };
  } else if (name == "join") {
    fn = [s](const CallArgs& args) -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"iterable"}, "join"));
      JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(a[0]));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "sequence item ", i, ": expected str instance, ", items[i].TypeName(), " found"));
        }
        absl::StrAppend(&out, i ? s : "", items[i].str());
      }
      return Value(std::move(out));
    };
  } else if (name == "removeprefix" || name == "removesuffix") {
    const bool prefix = name == "removeprefix";
    fn = [s, prefix, name](const CallArgs& args) -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"affix"}, name));
      JINJA_ASSIGN_OR_RETURN(std::string affix, StringArg(a[0], "affix", ""));
      if (prefix && absl::StartsWith(s, affix)) return Value(s.substr(affix.size()));
      if (!prefix && absl::EndsWith(s, affix)) return Value(s.substr(0, s.size() - affix.size()));
      return Value(s);
    };
  } else if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
             name == "islower" || name == "isupper") {
    fn = [s, name](const CallArgs&) -> absl::StatusOr<Value> {
      if (name == "isdigit") return Value(AllChars(s, std::isdigit));
      if (name == "isalpha") return Value(AllChars(s, std::isalpha));
      if (name == "isalnum") return Value(AllChars(s, std::isalnum));
      if (name == "isspace") return Value(!PythonStrip(s).size() && !s.empty());
      const std::string cased = name == "islower" ? PythonLower(s) : PythonUpper(s);
      return Value(cased == s && PythonLower(s) != PythonUpper(s));
    };
  } else if (name == "splitlines") {
    fn = [s](const CallArgs&) -> absl::StatusOr<Value> {
      ValueList lines;
      size_t begin = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\n' && s[i] != '\r') continue;
        lines.emplace_back(s.substr(begin, i - begin));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        begin = i + 1;
      }
      if (begin < s.size()) lines.emplace_back(s.substr(begin));
      return Value::List(std::move(lines));
    };
  } else {
    return NoAttribute(Value(s), name);
  }
  return Value::Callable(absl::StrCat("str.", name), std::move(fn));
}

Value DictMethod(const Value& dict, const std::string& name) {
  if (name == "get") {
    return Value::Callable("dict.get", [dict](const CallArgs& args) -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"key", "default"}, "get"));
      const Value* v = a[0].is_string() ? dict.Find(a[0].str()) : nullptr;
      if (v != nullptr) return *v;
      return a[1].is_undefined() ? Value::None() : a[1];
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    return Value::Callable(absl::StrCat("dict.", name), [dict, name](const CallArgs& args)
                                                            -> absl::StatusOr<Value> {
      JINJA_RETURN_IF_ERROR(BindArgs(args, {}, name).status());
      ValueList out;
      for (const auto& [key, value] : dict.dict()) {
        if (name == "items") {
          out.push_back(Value::List({Value(key), value}));
        } else {
          out.push_back(name == "keys" ? Value(key) : value);
        }
      }
      return Value::List(std::move(out));
    });
  }
  if (name == "copy") {
    return Value::Callable("dict.copy", [dict](const CallArgs&) -> absl::StatusOr<Value> {
      return Value::Dict(dict.dict());
    });
  }
  static const char* kMutating[] = {"pop", "popitem", "update", "setdefault", "clear", "fromkeys"};
  for (const char* m : kMutating) {
    if (name == m) return Unsafe(dict, name);
  }
  const Value* v = dict.Find(name);
  return v ? *v : NoAttribute(dict, name);
}

Value ListMethod(const Value& list, const std::string& name) {
  if (name == "index" || name == "count") {
    return Value::Callable(absl::StrCat("list.", name), [list, name](const CallArgs& args)
                                                            -> absl::StatusOr<Value> {
      JINJA_ASSIGN_OR_RETURN(std::vector<Value> a, BindArgs(args, {"value"}, name));
      int64_t count = 0;
      for (size_t i = 0; i < list.list().size(); ++i) {
        if (list.list()[i] != a[0]) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++count;
      }
      if (name == "index") return absl::InvalidArgumentError("list.index(x): x not in list");
      return Value(count);
    });
  }
  static const char* kMutating[] = {"append", "pop", "extend", "insert", "remove",
                                    "reverse", "sort", "clear"};
  for (const char* m : kMutating) {
    if (name == m) return Unsafe(list, name);
  }
  return NoAttribute(list, name);
}

}  // namespace

absl::StatusOr<Value> GetAttr(const Value& object, const std::string& name) {
  if (object.is_undefined()) return UndefinedError(object);
  if (!name.empty() && name[0] == '_') {
    return Value::Undefined(absl::StrCat("access to attribute '", name, "' of '",
                                         object.TypeName(), "' object is unsafe"));
  }
  switch (object.kind()) {
    case Value::Kind::kString: return StringMethod(object.str(), name);
    case Value::Kind::kList: return ListMethod(object, name);
    case Value::Kind::kDict:
      if (object.is_namespace()) {
        const Value* v = object.Find(name);
        return v ? *v : NoAttribute(object, name);
      }
      return DictMethod(object, name);
    default: return NoAttribute(object, name);
  }
}

absl::StatusOr<std::string> PythonFormat(const std::string& format, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') ++i;
      out.push_back('}');
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) return absl::InvalidArgumentError("format: '{' without '}'");
    const std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    if (field.find_first_of(":!.[") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("format: field {", field, "} uses a conversion or format spec, which is "
                       "not supported"));
    }
    const Value* value = nullptr;
    size_t index = 0;
    if (field.empty() || absl::SimpleAtoi(field, &index)) {
      if (field.empty()) index = auto_index++;
      if (index >= args.positional.size()) {
        return absl::InvalidArgumentError(absl::StrCat("format: no argument ", index));
      }
      value = &args.positional[index];
    } else {
      for (const auto& [key, v] : args.keyword) {
        if (key == field) value = &v;
      }
      if (value == nullptr) return absl::InvalidArgumentError(absl::StrCat("format: no argument '", field, "'"));
    }
    out += value->Str();
  }
  return out;
}

}  // namespace rigtune::data::jinja
