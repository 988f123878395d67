// Decoders: the `decoder` section of tokenizer.json, which turns token
// strings back into text.
//
// A decoder rewrites the list of token strings (Hugging Face's decode chain);
// the tokenizer joins what is left. Supported types: ByteLevel (symbols back
// to bytes, invalid UTF-8 becomes U+FFFD), Metaspace ("▁" back to spaces, the
// prefix space of the first token dropped), ByteFallback (runs of <0xNN>
// tokens back to bytes; a run that is not valid UTF-8 becomes one U+FFFD per
// byte), Fuse, Strip, Replace and Sequence. Example (Llama 2):
//
//   Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]
//   {"▁Hello", "<0xE6>", "<0x97>", "<0xA5>"}  ->  {"Hello日"}
#ifndef RIGTUNE_WORKER_DATA_DECODERS_H_
#define RIGTUNE_WORKER_DATA_DECODERS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace rigtune::data {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites `tokens` in place.
  virtual absl::Status DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Null JSON gives nullptr (tokens are joined as they are). Unknown types fail
// with InvalidArgument naming "decoder.type".
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& config);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_DECODERS_H_
