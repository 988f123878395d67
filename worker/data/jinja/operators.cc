#include "worker/data/jinja/operators.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/data/jinja/filters.h"
#include "worker/data/utf8.h"

namespace rigtune::data::jinja {
namespace {

absl::Status Unsupported(absl::string_view op, const Value& a, const Value& b) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported operand type(s) for ", op, ": '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

absl::StatusOr<Value> Arithmetic(absl::string_view op, const Value& a, const Value& b) {
  const bool floats = a.is_float() || b.is_float();
  const double x = a.as_double(), y = b.as_double();
  if (op == "+") return floats ? Value(x + y) : Value(a.as_int() + b.as_int());
  if (op == "-") return floats ? Value(x - y) : Value(a.as_int() - b.as_int());
  if (op == "*") return floats ? Value(x * y) : Value(a.as_int() * b.as_int());
  if (op == "**") {
    if (!floats && b.as_int() >= 0) {
      int64_t r = 1;
      for (int64_t i = 0; i < b.as_int() && i < 64; ++i) r *= a.as_int();
      return Value(r);
    }
    return Value(std::pow(x, y));
  }
  if (y == 0) return absl::InvalidArgumentError("division by zero");
  if (op == "/") return Value(x / y);
  if (op == "//") {
    return floats ? Value(std::floor(x / y)) : Value(FloorDiv(a.as_int(), b.as_int()));
  }
  if (op == "%") {
    if (floats) {
      const double r = std::fmod(x, y);
      return Value(r != 0 && ((r < 0) != (y < 0)) ? r + y : r);
    }
    return Value(a.as_int() - FloorDiv(a.as_int(), b.as_int()) * b.as_int());
  }
  return Unsupported(op, a, b);
}

// Strings and lists a template builds in memory (not only what it prints)
// stay under this, so `{% set s = s + s %}` in a loop cannot exhaust memory.
constexpr size_t kMaxValueBytes = size_t{1} << 24;

absl::Status TooLarge(absl::string_view op) {
  return absl::InvalidArgumentError(
      absl::StrCat("the result of '", op, "' would be larger than 16 MiB"));
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t times) {
  constexpr int64_t kMaxRepeatBytes = static_cast<int64_t>(kMaxValueBytes);
  if (times <= 0 || (seq.is_string() ? seq.str().empty() : seq.list().empty())) {
    return seq.is_string() ? Value("") : Value::List({});
  }
  if (seq.is_string()) {
    if (times > 0 && static_cast<int64_t>(seq.str().size()) * times > kMaxRepeatBytes) {
      return absl::InvalidArgumentError("string repetition larger than 16 MiB");
    }
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return Value(std::move(out));
  }
  if (times > 0 && static_cast<int64_t>(seq.list().size()) * times > kMaxRepeatBytes) {
    return absl::InvalidArgumentError("list repetition too large");
  }
  ValueList out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return Value::List(std::move(out));
}

// Python's slice.indices for a sequence of `size`.
void SliceIndices(int64_t size, const Value& start, const Value& stop, int64_t step,
                  int64_t* begin, int64_t* end) {
  auto clamp = [&](const Value& v, int64_t fallback) {
    if (v.is_undefined() || v.is_none()) return fallback;
    int64_t i = v.as_int();
    if (i < 0) i += size;
    if (step > 0) return std::clamp<int64_t>(i, 0, size);
    return std::clamp<int64_t>(i, -1, size - 1);
  };
  if (step > 0) {
    *begin = clamp(start, 0);
    *end = clamp(stop, size);
  } else {
    *begin = clamp(start, size - 1);
    *end = clamp(stop, -1);
  }
}

}  // namespace

absl::Status UndefinedError(const Value& undefined) {
  return absl::InvalidArgumentError(undefined.undefined_name());
}

ValueList Characters(const std::string& s) {
  ValueList out;
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = std::max<size_t>(1, ValidUtf8SequenceLength(s, pos));
    out.emplace_back(s.substr(pos, n));
    pos += n;
  }
  return out;
}

absl::StatusOr<Value> BinaryOp(absl::string_view op, const Value& a, const Value& b) {
  if (op == "==") return Value(a == b);
  if (op == "!=") return Value(a != b);
  if (op == "~") {
    std::string joined = a.Str() + b.Str();
    if (joined.size() > kMaxValueBytes) return TooLarge(op);
    return Value(std::move(joined));
  }
  if (op == "in" || op == "not in") {
    absl::StatusOr<bool> in = Contains(b, a);
    if (!in.ok()) return in.status();
    return Value(op == "in" ? *in : !*in);
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    const bool swap = op == ">" || op == "<=";
    absl::StatusOr<bool> less = swap ? LessThan(b, a) : LessThan(a, b);
    if (!less.ok()) return less.status();
    return Value(op == "<=" || op == ">=" ? !*less : *less);
  }
  if (a.is_number() && b.is_number()) return Arithmetic(op, a, b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.str().size() + b.str().size() > kMaxValueBytes) return TooLarge(op);
      if (a.is_markup() || b.is_markup()) {
        return Value::Markup((a.is_markup() ? a.str() : HtmlEscape(a.str())) +
                             (b.is_markup() ? b.str() : HtmlEscape(b.str())));
      }
      return Value(a.str() + b.str());
    }
    if (a.is_list() && b.is_list()) {
      if (a.list().size() + b.list().size() > kMaxValueBytes) return TooLarge(op);
      ValueList out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return Value::List(std::move(out));
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) return Repeat(a, b.as_int());
    if ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool())) return Repeat(b, a.as_int());
  }
  return Unsupported(op, a, b);
}

absl::StatusOr<Value> UnaryOp(absl::string_view op, const Value& a) {
  if (a.is_undefined()) return UndefinedError(a);
  if (!a.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad operand type for unary ", op, ": '", a.TypeName(), "'"));
  }
  if (op == "+") return a.is_float() ? a : Value(a.as_int());
  return a.is_float() ? Value(-a.as_double()) : Value(-a.as_int());
}

absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle) {
  switch (haystack.kind()) {
    case Value::Kind::kUndefined: return false;
    case Value::Kind::kString:
      if (!needle.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'in <string>' requires string as left operand, not ", needle.TypeName()));
      }
      return absl::StrContains(haystack.str(), needle.str());
    case Value::Kind::kList:
      for (const Value& item : haystack.list()) {
        if (item == needle) return true;
      }
      return false;
    case Value::Kind::kDict:
      return needle.is_string() && haystack.Find(needle.str()) != nullptr;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("argument of type '", haystack.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<Value> GetItem(const Value& object, const Value& key) {
  if (object.is_undefined()) return UndefinedError(object);
  const auto missing = [&] {
    return Value::Undefined(
        absl::StrCat("'", object.TypeName(), " object' has no element ", key.Repr()));
  };
  if (object.is_dict()) {
    if (!key.is_string()) return missing();
    const Value* v = object.Find(key.str());
    return v ? *v : missing();
  }
  if (object.is_list() || object.is_string()) {
    if (!key.is_int() && !key.is_bool()) {
      return absl::InvalidArgumentError(absl::StrCat(object.TypeName(),
                                                     " indices must be integers, not ",
                                                     key.TypeName()));
    }
    const ValueList chars = object.is_string() ? Characters(object.str()) : ValueList();
    const ValueList& items = object.is_string() ? chars : object.list();
    int64_t i = key.as_int();
    if (i < 0) i += static_cast<int64_t>(items.size());
    if (i < 0 || i >= static_cast<int64_t>(items.size())) return missing();
    return items[static_cast<size_t>(i)];
  }
  return missing();
}

absl::StatusOr<Value> GetSlice(const Value& object, const Value& start, const Value& stop,
                               const Value& step_value) {
  if (object.is_undefined()) return UndefinedError(object);
  if (!object.is_list() && !object.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", object.TypeName(), "' object is not subscriptable"));
  }
  for (const Value* v : {&start, &stop, &step_value}) {
    if (!v->is_undefined() && !v->is_none() && !v->is_int() && !v->is_bool()) {
      return absl::InvalidArgumentError("slice indices must be integers or None");
    }
  }
  const int64_t step = step_value.is_int() ? step_value.as_int() : 1;
  if (step == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  const ValueList chars = object.is_string() ? Characters(object.str()) : ValueList();
  const ValueList& items = object.is_string() ? chars : object.list();
  int64_t begin = 0, end = 0;
  SliceIndices(static_cast<int64_t>(items.size()), start, stop, step, &begin, &end);
  ValueList out;
  for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) {
    out.push_back(items[static_cast<size_t>(i)]);
  }
  if (!object.is_string()) return Value::List(std::move(out));
  std::string s;
  for (const Value& c : out) s += c.str();
  return Value(std::move(s));
}

absl::StatusOr<ValueList> Iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined: return ValueList();
    case Value::Kind::kList: return value.list();
    case Value::Kind::kString: return Characters(value.str());
    case Value::Kind::kDict: {
      if (value.is_namespace()) break;
      ValueList keys;
      for (const auto& [key, item] : value.dict()) keys.emplace_back(key);
      return keys;
    }
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", value.TypeName(), "' object is not iterable"));
}

}  // namespace rigtune::data::jinja
