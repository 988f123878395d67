// Base formats (train.base) and DoRA (train.method) through the whole job on
// the CPU (Gloo): sharded over 2 ranks, streamed with offload, and paused and
// resumed, each trains exactly what one plain rank trains. DoRA's magnitude
// vectors are trainable state like A and B: sharded, reduce-scattered,
// checkpointed and exported.
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "tests/worker/dist/fsdp_launcher.h"

namespace rigtune::testing {
namespace {

struct Combo {
  const char* base;
  const char* method;
};
constexpr Combo kCombos[] = {
    {"bf16", "lora"}, {"hqq4", "lora"}, {"nf4", "dora"}, {"bf16", "dora"}, {"hqq4", "dora"}};

std::string Name(const Combo& c, const std::string& what) {
  return std::string(c.base) + "_" + c.method + "_" + what;
}

using BaseTypesRanks = FsdpLauncher;

// Losses agree to 1e-5 across rank counts. The adapters after a few AdamW
// steps agree to kWeightTol: two ranks sum the gradient in another order
// (rounding at 1e-7), and Adam's first steps divide every gradient entry by
// its own magnitude, which amplifies that rounding where an entry nearly
// cancels. One rank with and without offload (same order) agrees to 1e-5.
constexpr double kWeightTol = 3e-4;

TEST_F(BaseTypesRanks, TwoRanksMatchOneRank) {
  for (const Combo& c : kCombos) {
    SCOPED_TRACE(Name(c, ""));
    Outcome one = Launch(Name(c, "one"), {.world = 1, .batch = 4, .base = c.base,
                                          .method = c.method});
    ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
    ASSERT_EQ(one.losses.size(), 4u);
    ExpectSameTraining(one, Launch(Name(c, "two"), {.world = 2, .batch = 2, .base = c.base,
                                                    .method = c.method}),
                       1e-5, kWeightTol);
  }
}

TEST_F(BaseTypesRanks, DoraAdapterHoldsMagnitudes) {
  Outcome one = Launch("dora", {.world = 1, .batch = 4, .base = "bf16", .method = "dora"});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  int magnitudes = 0;
  for (const auto& [key, t] : Adapter(one)) {
    if (!absl::EndsWith(key, ".lora_magnitude_vector")) continue;
    ++magnitudes;
    EXPECT_EQ(t.dim(), 1) << key;
  }
  EXPECT_EQ(magnitudes, 2 * 7);  // two layers, seven projections
  EXPECT_NE(Slurp(one.dir + "/adapter/adapter_config.json").find("\"use_dora\": true"),
            std::string::npos);
}

TEST_F(BaseTypesRanks, OffloadTrainsTheSame) {
  const Combo c{"bf16", "dora"};
  Outcome plain = Launch("plain", {.world = 1, .batch = 4, .base = c.base, .method = c.method});
  ASSERT_EQ(plain.exit_codes[0], 0) << plain.rank0_log;
  ExpectSameTraining(plain,
                     Launch("offload", {.world = 1, .batch = 4, .cpu_offload = true,
                                        .offload_optimizer = true, .base = c.base,
                                        .method = c.method}),
                     1e-5);
}

TEST_F(BaseTypesRanks, DoraPausedOnTwoRanksResumesOnOne) {
  const LaunchOptions whole{.world = 1, .batch = 4, .steps = 6, .base = "bf16", .method = "dora"};
  Outcome full = Launch("full", whole);
  ASSERT_EQ(full.exit_codes[0], 0) << full.rank0_log;
  LaunchOptions first = whole;
  first.world = 2;
  first.batch = 2;
  first.stop_after = 3;
  Outcome paused = Launch("paused", first);
  for (int code : paused.exit_codes) ASSERT_EQ(code, 0) << paused.rank0_log;
  ASSERT_EQ(paused.losses.size(), 3u);
  LaunchOptions second = whole;
  second.resume_from = paused.dir + "/checkpoints/step-3";
  Outcome resumed = Launch("resumed", second);
  Outcome joined = resumed;
  joined.losses = paused.losses;
  joined.losses.insert(joined.losses.end(), resumed.losses.begin(), resumed.losses.end());
  ExpectSameTraining(full, joined, 1e-5, kWeightTol);
}

}  // namespace
}  // namespace rigtune::testing
