// Python `str` and `json` behaviour that chat templates rely on, for UTF-8
// std::string: the text functions Jinja's filters and string methods call
// (str.strip, str.split, str.title, ...), Python's float repr, and
// json.dumps' string escaping. Templates render exactly what transformers
// renders only if these agree with CPython character for character.
//
//   PythonStrip("  hi\n") == "hi"
//   PythonSplit("a  b") == {"a", "b"}
//   PythonFloatRepr(1e-5) == "1e-05"
#ifndef RIGTUNE_WORKER_DATA_JINJA_PYTHON_TEXT_H_
#define RIGTUNE_WORKER_DATA_JINJA_PYTHON_TEXT_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rigtune::data::jinja {

enum class StripSide { kBoth, kLeft, kRight };

// str.strip / lstrip / rstrip: without `chars`, Unicode whitespace; with
// `chars`, any of its characters.
std::string PythonStrip(std::string_view s, StripSide side = StripSide::kBoth,
                        std::optional<std::string_view> chars = std::nullopt);

// str.split(sep, maxsplit): without `sep`, runs of whitespace and no empty
// parts; maxsplit < 0 means no limit. rsplit when `from_right`.
std::vector<std::string> PythonSplit(std::string_view s,
                                     std::optional<std::string_view> sep = std::nullopt,
                                     int64_t maxsplit = -1, bool from_right = false);

// str.upper / lower / title / capitalize with Unicode case mapping.
std::string PythonUpper(std::string_view s);
std::string PythonLower(std::string_view s);
std::string PythonTitle(std::string_view s);
std::string PythonCapitalize(std::string_view s);

// str.replace(old, new, count); count < 0 replaces all. nullopt when the
// result would pass kMaxReplaceBytes.
inline constexpr size_t kMaxReplaceBytes = size_t{1} << 24;
std::optional<std::string> PythonReplace(std::string_view s, std::string_view old_text,
                          std::string_view new_text, int64_t count = -1);

// repr(float): the shortest text that reads back the same, "1.0", "1e-05",
// "inf", "nan".
std::string PythonFloatRepr(double v);

// repr(str): single quotes unless the text holds ' and no ".
std::string PythonStringRepr(std::string_view s);

// json.dumps(str, ensure_ascii=...): the quoted, escaped string.
std::string JsonQuote(std::string_view s, bool ensure_ascii);

// Number of Unicode characters (len(str)).
size_t CodePointCount(std::string_view s);

}  // namespace rigtune::data::jinja

#endif  // RIGTUNE_WORKER_DATA_JINJA_PYTHON_TEXT_H_
