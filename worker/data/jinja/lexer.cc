#include "worker/data/jinja/lexer.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "worker/data/utf8.h"

namespace rigtune::data::jinja {
namespace {

// Note [Whitespace control]
// transformers compiles chat templates with trim_blocks=True and
// lstrip_blocks=True, and Jinja's default keep_trailing_newline=False:
//  * one "\n" at the very end of the source is dropped;
//  * "{%-", "{{-", "{#-" strip all whitespace before the tag, and "-%}",
//    "-}}", "-#}" all whitespace after it;
//  * trim_blocks: a block tag or comment swallows one "\n" right after it
//    (not with "+%}");
//  * lstrip_blocks: spaces and tabs between the start of a line and a block
//    tag or comment are removed (not with "{%+", never for "{{").
// Newlines are normalised to "\n" first, as Jinja's newline_sequence does.

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

absl::Status LexError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

int CountLines(absl::string_view s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// Unescapes a string literal body as Python's "unicode-escape" codec does.
std::string Unescape(absl::string_view body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out.push_back(body[i]);
      continue;
    }
    const char c = body[++i];
    auto hex = [&](size_t digits) {
      uint32_t cp = 0;
      for (size_t k = 1; k <= digits; ++k) {
        if (i + k >= body.size() || !std::isxdigit(static_cast<unsigned char>(body[i + k]))) {
          return false;
        }
        const char h = static_cast<char>(std::tolower(static_cast<unsigned char>(body[i + k])));
        cp = cp * 16 + static_cast<uint32_t>(h <= '9' ? h - '0' : h - 'a' + 10);
      }
      AppendUtf8(cp, &out);
      i += digits;
      return true;
    };
    switch (c) {
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case 'a': out.push_back('\a'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'v': out.push_back('\v'); break;
      case '0': out.push_back('\0'); break;
      case '\\': case '\'': case '"': out.push_back(c); break;
      case '\n': break;  // line continuation
      case 'x': if (!hex(2)) out += "\\x"; break;
      case 'u': if (!hex(4)) out += "\\u"; break;
      case 'U': if (!hex(8)) out += "\\U"; break;
      default: out.push_back('\\'); out.push_back(c);
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = src_.find('{', pos_);
      while (start != std::string::npos && start + 1 < src_.size() &&
             src_[start + 1] != '{' && src_[start + 1] != '%' && src_[start + 1] != '#') {
        start = src_.find('{', start + 1);
      }
      if (start == std::string::npos || start + 1 >= src_.size()) {
        EmitText(src_.substr(pos_));
        break;
      }
      const char kind = src_[start + 1];
      const char marker = start + 2 < src_.size() ? src_[start + 2] : '\0';
      std::string text = src_.substr(pos_, start - pos_);
      const int text_line = line_;
      line_ += CountLines(text);
      if (marker == '-') {
        text.erase(text.find_last_not_of(" \t\n\r\f\v") + 1);
      } else if (kind != '{' && marker != '+') {
        const size_t l_pos = text.rfind('\n') + 1;  // npos + 1 == 0
        if ((l_pos > 0 || line_starting) &&
            text.find_first_not_of(" \t", l_pos) == std::string::npos) {
          text.erase(l_pos);
        }
      }
      EmitText(text, text_line);
      pos_ = start + 2 + (marker == '-' || marker == '+' ? 1 : 0);
      absl::Status s = kind == '#' ? SkipComment() : LexTag(kind);
      if (!s.ok()) return s;
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    tokens_.push_back({Token::Type::kEnd, "", line_});
    return std::move(tokens_);
  }

 private:
  void EmitText(std::string text, int line = 0) {
    if (text.empty()) return;
    tokens_.push_back({Token::Type::kText, std::move(text), line ? line : line_});
  }

  // After a closing delimiter at pos_: "-" strips all whitespace, otherwise
  // trim_blocks eats one newline after block tags and comments.
  void ConsumeAfterTag(bool strip, bool trim_newline) {
    const size_t begin = pos_;
    if (strip) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
    }
    if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') ++pos_;
    line_ += CountLines(absl::string_view(src_).substr(begin, pos_ - begin));
  }

  absl::Status SkipComment() {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) return LexError(line_, "unterminated comment ({# without #})");
    const bool strip = end > pos_ && src_[end - 1] == '-';
    line_ += CountLines(absl::string_view(src_).substr(pos_, end - pos_));
    pos_ = end + 2;
    ConsumeAfterTag(strip, true);
    return absl::OkStatus();
  }

  // Closing delimiter at pos_ ("}}" or "%}", optionally after "-" or "+")?
  size_t CloseLength(char kind) const {
    const std::string close = kind == '{' ? "}}" : "%}";
    absl::string_view rest = absl::string_view(src_).substr(pos_);
    if (rest.substr(0, 2) == close) return 2;
    if ((rest[0] == '-' || (rest[0] == '+' && kind == '%')) && rest.substr(1, 2) == close) return 3;
    return 0;
  }

  absl::Status LexTag(char kind) {
    const int begin_line = line_;
    tokens_.push_back({kind == '{' ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", line_});
    const size_t first_token = tokens_.size();
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) line_ += src_[pos_++] == '\n';
      if (pos_ >= src_.size()) {
        return LexError(begin_line, kind == '{' ? "unterminated {{ (no closing }})"
                                                : "unterminated {% (no closing %})");
      }
      if (depth == 0) {
        if (const size_t n = CloseLength(kind); n > 0) {
          const char flag = src_[pos_];
          pos_ += n;
          tokens_.push_back({kind == '{' ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", line_});
          ConsumeAfterTag(flag == '-', kind == '%' && flag != '+');
          if (kind == '%' && tokens_.size() == first_token + 2 &&
              tokens_[first_token].type == Token::Type::kName && tokens_[first_token].text == "raw") {
            return LexRaw(begin_line);
          }
          return absl::OkStatus();
        }
      }
      if (absl::Status s = LexToken(&depth); !s.ok()) return s;
    }
  }

  // {% raw %}...{% endraw %}: the body is text, tags inside are not parsed.
  absl::Status LexRaw(int begin_line) {
    tokens_.resize(tokens_.size() - 3);  // drop {% raw %}
    size_t search = pos_;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos) return LexError(begin_line, "{% raw %} without {% endraw %}");
      size_t p = open + 2;
      const bool strip_before = p < src_.size() && src_[p] == '-';
      if (strip_before || (p < src_.size() && src_[p] == '+')) ++p;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      p += 6;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      const bool strip_after = p < src_.size() && src_[p] == '-';
      if (strip_after) ++p;
      if (src_.compare(p, 2, "%}") != 0) return LexError(line_, "malformed {% endraw %}");
      std::string body = src_.substr(pos_, open - pos_);
      if (strip_before) body.erase(body.find_last_not_of(" \t\n\r\f\v") + 1);
      EmitText(body);
      line_ += CountLines(absl::string_view(src_).substr(pos_, p + 2 - pos_));
      pos_ = p + 2;
      ConsumeAfterTag(strip_after, true);
      return absl::OkStatus();
    }
  }

  absl::Status LexToken(int* depth) {
    const char c = src_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      const size_t begin = pos_;
      while (pos_ < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) {
        ++pos_;
      }
      tokens_.push_back({Token::Type::kName, src_.substr(begin, pos_ - begin), line_});
      return absl::OkStatus();
    }
    if (std::isdigit(static_cast<unsigned char>(c))) return LexNumber();
    if (c == '\'' || c == '"') return LexString(c);
    static constexpr const char* kTwoChar[] = {"**", "//", "==", "!=", "<=", ">="};
    for (const char* op : kTwoChar) {
      if (src_.compare(pos_, 2, op) == 0) {
        tokens_.push_back({Token::Type::kOperator, op, line_});
        pos_ += 2;
        return absl::OkStatus();
      }
    }
    if (absl::string_view("+-*/%~()[]{},.:|=<>").find(c) != absl::string_view::npos) {
      if (c == '(' || c == '[' || c == '{') ++*depth;
      if ((c == ')' || c == ']' || c == '}') && *depth > 0) --*depth;
      tokens_.push_back({Token::Type::kOperator, std::string(1, c), line_});
      ++pos_;
      return absl::OkStatus();
    }
    return LexError(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::Status LexNumber() {
    const size_t begin = pos_;
    auto digits = [&] {
      while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t p = pos_ + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) {
        is_float = true;
        pos_ = p;
        digits();
      }
    }
    std::string text;
    for (size_t i = begin; i < pos_; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, text, line_});
    return absl::OkStatus();
  }

  absl::Status LexString(char quote) {
    const int begin_line = line_;
    size_t p = pos_ + 1;
    while (p < src_.size() && src_[p] != quote) {
      if (src_[p] == '\\') ++p;
      ++p;
    }
    if (p >= src_.size()) return LexError(begin_line, "unterminated string literal");
    const std::string body = src_.substr(pos_ + 1, p - pos_ - 1);
    line_ += CountLines(body);
    tokens_.push_back({Token::Type::kString, Unescape(body), begin_line});
    pos_ = p + 1;
    return absl::OkStatus();
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

std::string NormalizeNewlines(absl::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(absl::string_view source) {
  return Lexer(NormalizeNewlines(source)).Run();
}

}  // namespace rigtune::data::jinja
