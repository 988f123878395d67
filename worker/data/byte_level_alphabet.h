// The byte-level alphabet of GPT-2 style BPE: each of the 256 byte values is
// shown as one printable Unicode character, so that every byte string is a
// string of vocabulary symbols. Printable Latin-1 bytes map to themselves;
// the rest (controls, space, 0x7F-0xA0, 0xAD) map to U+0100 and up, in byte
// order. Example: ByteToSymbol(' ') == "Ġ" (U+0120), ByteToSymbol('\n') == "Ċ".
#ifndef RIGTUNE_WORKER_DATA_BYTE_LEVEL_ALPHABET_H_
#define RIGTUNE_WORKER_DATA_BYTE_LEVEL_ALPHABET_H_

#include <cstdint>
#include <string>

namespace rigtune::data {

// UTF-8 encoding of the symbol that stands for `byte`.
const std::string& ByteToSymbol(uint8_t byte);

// The byte a symbol stands for, or -1 when `code_point` is not in the alphabet.
int SymbolToByte(uint32_t code_point);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_BYTE_LEVEL_ALPHABET_H_
