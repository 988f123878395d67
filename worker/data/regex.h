// Regex: a compiled PCRE2 pattern with the semantics tokenizer.json expects.
//
// Hugging Face tokenizers compile split patterns with Oniguruma in Unicode
// mode; PCRE2 with PCRE2_UTF | PCRE2_UCP accepts the same syntax for the
// patterns model families ship (\p{L}, \p{N}, (?i:...), {1,3}, (?!\S)).
// In UCP mode PCRE2's \s is Unicode White_Space, U+0085 (NEL) included, as
// in Oniguruma (pinned by pre_tokenizers_test). Compiled patterns are
// immutable and safe to share between threads. Example:
//
//   auto re = Regex::Compile(R"(\p{L}+|\s+)");
//   std::vector<Regex::Match> m;
//   (*re)->FindAll("hi there", &m);   // {0,2}, {2,3}, {3,8}
#ifndef RIGTUNE_WORKER_DATA_REGEX_H_
#define RIGTUNE_WORKER_DATA_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace rigtune::data {

class Regex {
 public:
  struct Match {
    size_t begin;
    size_t end;
  };

  // Fails with InvalidArgument quoting the pattern and PCRE2's message.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // A pattern that matches `literal` exactly.
  static absl::StatusOr<std::unique_ptr<Regex>> Literal(std::string_view literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping, non-empty matches in `subject` (valid UTF-8), left to
  // right. Fails only when PCRE2 itself fails (e.g. resource limits).
  absl::Status FindAll(std::string_view subject, std::vector<Match>* matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_REGEX_H_
