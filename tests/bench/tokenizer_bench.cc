// tokenizer_bench: encoding throughput of rigtune's tokenizer on one core.
//
//   tokenizer_bench MODEL_DIR [TEXT_FILE] [MEGABYTES]
//
// Encodes TEXT_FILE line by line (like dataset examples), or, without one,
// MEGABYTES (default 8) of generated text: pseudo-random words from a fixed
// seed mixing ASCII, accented Latin, CJK, digits, code and whitespace runs,
// so the BPE cache sees a realistic share of new words. Prints MB/s and
// tokens/s. The acceptance bar for the data pipeline is >= 1 MB/s per core.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "worker/data/shuffle_rng.h"
#include "worker/data/tokenizer.h"

namespace {

std::vector<std::string> GeneratedLines(double megabytes) {
  const std::vector<std::string> syllables = {"ka",
                                              "to",
                                              "ri",
                                              "men",
                                              "sha",
                                              "lo",
                                              "qu",
                                              "ent",
                                              "ion",
                                              "ver",
                                              "st",
                                              "ph",
                                              "ab",
                                              "ze",
                                              "\xc3\xa9t\xc3\xa9",
                                              "\xc3\xbc"
                                              "ber",
                                              "stra\xc3\x9f"
                                              "e",
                                              "\xe6\x97\xa5\xe6\x9c\xac",
                                              "\xe8\xaa\x9e",
                                              "\xd0\xbc\xd0\xb8\xd1\x80"};
  const std::vector<std::string> glue = {" ",  " ",    " ",   " ",  ", ",      ". ",
                                         "\n", "  ",   "(",   ") ", " = ",     "'s ",
                                         "\t", " 123", "45 ", "; ", "\n\n    "};
  rigtune::data::ShuffleRng rng(2024);
  std::vector<std::string> lines;
  const auto target = static_cast<size_t>(megabytes * 1024 * 1024);
  size_t total = 0;
  while (total < target) {
    std::string line;
    while (line.size() < 2048) {
      const uint64_t n = 1 + rng.Below(4);
      for (uint64_t k = 0; k < n; ++k) line += syllables[rng.Below(syllables.size())];
      line += glue[rng.Below(glue.size())];
    }
    total += line.size();
    lines.push_back(std::move(line));
  }
  return lines;
}

std::vector<std::string> FileLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tokenizer_bench MODEL_DIR [TEXT_FILE] [MEGABYTES]\n");
    return 2;
  }
  auto tok = rigtune::data::Tokenizer::Load(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  const bool from_file = argc >= 3 && std::string(argv[2]) != "-";
  const double megabytes = argc >= 4 ? std::stod(argv[3]) : 8.0;
  const std::vector<std::string> lines = from_file ? FileLines(argv[2]) : GeneratedLines(megabytes);
  size_t bytes = 0;
  size_t tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& line : lines) {
    auto ids = (*tok)->Encode(line, false);
    if (!ids.ok()) {
      std::fprintf(stderr, "%s\n", ids.status().ToString().c_str());
      return 1;
    }
    bytes += line.size();
    tokens += ids->size();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "tokenizer_bench: %zu bytes, %zu tokens in %.3f s: %.2f MB/s, %.0f tokens/s (1 thread)\n",
      bytes, tokens, seconds, bytes / seconds / 1e6, tokens / seconds);
  return 0;
}
