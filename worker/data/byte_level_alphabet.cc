#include "worker/data/byte_level_alphabet.h"

#include <array>

#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

struct Alphabet {
  std::array<std::string, 256> symbol;
  std::array<int, 512> byte_of;  // indexed by code point; all symbols are < 512

  Alphabet() {
    byte_of.fill(-1);
    uint32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : next_extra++;
      AppendUtf8(cp, &symbol[b]);
      byte_of[cp] = b;
    }
  }
};

const Alphabet& TheAlphabet() {
  static const Alphabet* alphabet = new Alphabet();
  return *alphabet;
}

}  // namespace

const std::string& ByteToSymbol(uint8_t byte) { return TheAlphabet().symbol[byte]; }

int SymbolToByte(uint32_t code_point) {
  return code_point < 512 ? TheAlphabet().byte_of[code_point] : -1;
}

}  // namespace rigtune::data
