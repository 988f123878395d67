// Resume across a different number of ranks (CPU, Gloo): checkpoints are
// un-sharded, so a job paused on 2 ranks continues on 1 and one paused on 1
// continues on 2, training what the uninterrupted run trains. The global
// batch stays the same (2 x 2 rows = 1 x 4 rows).
#include <gtest/gtest.h>

#include "tests/worker/dist/fsdp_launcher.h"

namespace rigtune::testing {
namespace {

class ResumeRanks : public FsdpLauncher {
 protected:
  Outcome Full() {
    Outcome full = Launch("full", {.world = 1, .batch = 4, .steps = 6});
    EXPECT_EQ(full.exit_codes[0], 0) << full.rank0_log;
    return full;
  }

  // Pauses after 3 of 6 steps on `first_world` ranks, resumes on
  // `second_world`, and compares the joined run with `full`.
  void PauseAndResume(const Outcome& full, int first_world, int second_world) {
    const std::string name = std::to_string(first_world) + "_then_" + std::to_string(second_world);
    Outcome first =
        Launch(name + "_first",
               {.world = first_world, .batch = 4 / first_world, .steps = 6, .stop_after = 3});
    for (int c : first.exit_codes) ASSERT_EQ(c, 0) << first.rank0_log;
    ASSERT_EQ(first.losses.size(), 3u);
    Outcome second = Launch(name + "_second", {.world = second_world,
                                               .batch = 4 / second_world,
                                               .steps = 6,
                                               .resume_from = first.dir + "/checkpoints/step-3"});
    for (int c : second.exit_codes) ASSERT_EQ(c, 0) << second.rank0_log;
    Outcome joined = second;
    joined.losses = first.losses;
    joined.losses.insert(joined.losses.end(), second.losses.begin(), second.losses.end());
    ExpectSameTraining(full, joined, 1e-5);
  }
};

TEST_F(ResumeRanks, TwoRanksResumeAsOne) {
  Outcome full = Full();
  ASSERT_EQ(full.losses.size(), 6u);
  PauseAndResume(full, 2, 1);
}

TEST_F(ResumeRanks, OneRankResumesAsTwo) {
  Outcome full = Full();
  ASSERT_EQ(full.losses.size(), 6u);
  PauseAndResume(full, 1, 2);
}

}  // namespace
}  // namespace rigtune::testing
