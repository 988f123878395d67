#include "worker/data/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace rigtune::data {
namespace {

struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(32, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& ThreadScratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

std::string QuoteLiteral(std::string_view literal) {
  return absl::StrCat("\\Q", std::string(literal), "\\E");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("invalid regex \"", std::string(pattern),
                                                   "\" at offset ", offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  std::unique_ptr<Regex> re(new Regex());
  re->pattern_ = std::string(pattern);
  re->code_ = code;
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Literal(std::string_view literal) {
  if (literal.find("\\E") != std::string_view::npos) {
    // \Q...\E cannot quote "\E"; escape every character instead.
    std::string escaped;
    for (char c : literal) {
      if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          static_cast<unsigned char>(c) >= 0x80) {
        escaped.push_back(c);
      } else {
        escaped.push_back('\\');
        escaped.push_back(c);
      }
    }
    return Compile(escaped);
  }
  return Compile(QuoteLiteral(literal));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(std::string_view subject, std::vector<Match>* matches) const {
  matches->clear();
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& scratch = ThreadScratch();
  const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  while (start <= subject.size()) {
    const int rc = jit_ ? pcre2_jit_match(code, data, subject.size(), start, PCRE2_NO_UTF_CHECK,
                                          scratch.data, scratch.context)
                        : pcre2_match(code, data, subject.size(), start, PCRE2_NO_UTF_CHECK,
                                      scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(absl::StrCat(
          "regex \"", pattern_, "\" failed: ", reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end > begin) {
      matches->push_back({begin, end});
      start = end;
    } else {
      // Skip an empty match by one whole character.
      if (begin >= subject.size()) break;
      size_t next = begin + 1;
      while (next < subject.size() && (static_cast<unsigned char>(subject[next]) & 0xC0) == 0x80) {
        ++next;
      }
      start = next;
    }
  }
  return absl::OkStatus();
}

}  // namespace rigtune::data
