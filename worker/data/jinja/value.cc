#include "worker/data/jinja/value.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/data/jinja/python_text.h"

namespace rigtune::data::jinja {

Value Value::Undefined(std::string name) {
  Value v;
  v.data_ = UndefinedName{std::move(name)};
  return v;
}

Value Value::List(ValueList items) {
  Value v;
  v.data_ = std::make_shared<const ValueList>(std::move(items));
  return v;
}

Value Value::Dict(ValueDict items) {
  Value v;
  v.data_ = std::make_shared<DictData>(DictData{std::move(items), false});
  return v;
}

Value Value::Namespace(ValueDict items) {
  Value v;
  v.data_ = std::make_shared<DictData>(DictData{std::move(items), true});
  return v;
}

Value Value::Callable(std::string name, Function fn) {
  Value v;
  v.data_ = std::make_shared<const FunctionData>(FunctionData{std::move(name), std::move(fn)});
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(static_cast<int64_t>(json.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(FromJson(item));
      return List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict items;
      items.reserve(json.size());
      for (const auto& [key, item] : json.items()) items.emplace_back(key, FromJson(item));
      return Dict(std::move(items));
    }
    default: return None();
  }
}

int64_t Value::as_int() const { return is_bool() ? int64_t{as_bool()} : std::get<int64_t>(data_); }

double Value::as_double() const {
  if (is_float()) return std::get<double>(data_);
  return static_cast<double>(as_int());
}

const Value* Value::Find(absl::string_view key) const {
  if (!is_dict()) return nullptr;
  for (const auto& [k, v] : dict()) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::SetNamespaceAttr(const std::string& key, Value value) const {
  ValueDict& items = std::get<DictPtr>(data_)->items;
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

bool Value::SameAs(const Value& other) const {
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::kList: return std::get<ListPtr>(data_) == std::get<ListPtr>(other.data_);
    case Kind::kDict: return std::get<DictPtr>(data_) == std::get<DictPtr>(other.data_);
    case Kind::kFunction: return std::get<FunctionPtr>(data_) == std::get<FunctionPtr>(other.data_);
    default: return *this == other;
  }
}

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return as_bool();
    case Kind::kInt: return as_int() != 0;
    case Kind::kFloat: return as_double() != 0.0;
    case Kind::kString: return !str().empty();
    case Kind::kList: return !list().empty();
    case Kind::kDict: return is_namespace() || !dict().empty();
    case Kind::kFunction: return true;
  }
  return false;
}

std::string Value::Str() const {
  switch (kind()) {
    case Kind::kUndefined: return "";
    case Kind::kString: return str();
    default: return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind()) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return as_bool() ? "True" : "False";
    case Kind::kInt: return absl::StrCat(as_int());
    case Kind::kFloat: return PythonFloatRepr(as_double());
    case Kind::kString: return PythonStringRepr(str());
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list().size(); ++i) {
        absl::StrAppend(&out, i ? ", " : "", list()[i].Repr());
      }
      return out + "]";
    }
    case Kind::kDict: {
      std::string out = is_namespace() ? "<Namespace {" : "{";
      for (size_t i = 0; i < dict().size(); ++i) {
        absl::StrAppend(&out, i ? ", " : "", PythonStringRepr(dict()[i].first), ": ",
                        dict()[i].second.Repr());
      }
      return out + (is_namespace() ? "}>" : "}");
    }
    case Kind::kFunction: return absl::StrCat("<function ", function_name(), ">");
  }
  return "";
}

const char* Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return is_namespace() ? "Namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "";
}

absl::StatusOr<std::string> Value::ToJson(const JsonOptions& options) const {
  std::string out;
  if (absl::Status s = AppendJson(options, 0, &out); !s.ok()) return s;
  return out;
}

absl::Status Value::AppendJson(const JsonOptions& options, int depth, std::string* out) const {
  const bool indented = options.indent >= 0 || !options.indent_text.empty();
  const std::string item_separator =
      !options.item_separator.empty() ? options.item_separator : (indented ? "," : ", ");
  const std::string unit =
      !options.indent_text.empty() ? options.indent_text : std::string(std::max(options.indent, 0), ' ');
  auto newline = [&](int level) {
    if (!indented) return;
    out->push_back('\n');
    for (int i = 0; i < level; ++i) out->append(unit);
  };
  switch (kind()) {
    case Kind::kUndefined:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: '", undefined_name(), "' is undefined"));
    case Kind::kFunction:
      return absl::InvalidArgumentError("tojson: a function is not JSON serializable");
    case Kind::kNone: out->append("null"); return absl::OkStatus();
    case Kind::kBool: out->append(as_bool() ? "true" : "false"); return absl::OkStatus();
    case Kind::kInt: absl::StrAppend(out, as_int()); return absl::OkStatus();
    case Kind::kFloat: {
      const double d = as_double();
      if (std::isnan(d)) {
        out->append("NaN");
      } else if (std::isinf(d)) {
        out->append(d > 0 ? "Infinity" : "-Infinity");
      } else {
        out->append(PythonFloatRepr(d));
      }
      return absl::OkStatus();
    }
    case Kind::kString: out->append(JsonQuote(str(), options.ensure_ascii)); return absl::OkStatus();
    case Kind::kList: {
      if (list().empty()) {
        out->append("[]");
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t i = 0; i < list().size(); ++i) {
        if (i) out->append(item_separator);
        newline(depth + 1);
        if (absl::Status s = list()[i].AppendJson(options, depth + 1, out); !s.ok()) return s;
      }
      newline(depth);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Kind::kDict: {
      if (dict().empty()) {
        out->append("{}");
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : dict()) entries.push_back(&entry);
      if (options.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out->append(item_separator);
        newline(depth + 1);
        absl::StrAppend(out, JsonQuote(entries[i]->first, options.ensure_ascii),
                        options.key_separator);
        if (absl::Status s = entries[i]->second.AppendJson(options, depth + 1, out); !s.ok()) {
          return s;
        }
      }
      newline(depth);
      out->push_back('}');
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return true;
    case Value::Kind::kString: return a.str() == b.str();
    case Value::Kind::kList: return a.list() == b.list();
    case Value::Kind::kDict: {
      if (a.SameAs(b)) return true;
      if (a.is_namespace() || b.is_namespace() || a.dict().size() != b.dict().size()) return false;
      for (const auto& [key, value] : a.dict()) {
        const Value* other = b.Find(key);
        if (other == nullptr || *other != value) return false;
      }
      return true;
    }
    case Value::Kind::kFunction: return a.SameAs(b);
    default: return false;
  }
}

absl::StatusOr<bool> LessThan(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();
  if (a.is_list() && b.is_list()) {
    const ValueList& x = a.list();
    const ValueList& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i] == y[i]) continue;
      return LessThan(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

}  // namespace rigtune::data::jinja
