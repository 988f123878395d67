// Test fixtures' shared set-up for the service tests.
#ifndef RIGTUNE_TESTS_SERVER_TEST_DIR_H_
#define RIGTUNE_TESTS_SERVER_TEST_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace rigtune::testing {

// An empty folder of the running test's own under GoogleTest's TempDir
// (below `group` when given); whatever an earlier run left there is removed.
inline std::filesystem::path FreshTestDir(const std::string& group = "") {
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir());
  if (!group.empty()) dir /= group;
  dir /= ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Clears the fake worker's knobs (RIGTUNE_FAKE_*) that an earlier test set.
inline void ClearFakeWorkerKnobs() {
  for (const char* knob : {"RIGTUNE_FAKE_STEP_MS", "RIGTUNE_FAKE_CRASH_AT_STEP",
                           "RIGTUNE_FAKE_FAIL"}) {
    unsetenv(knob);
  }
}

}  // namespace rigtune::testing

#endif  // RIGTUNE_TESTS_SERVER_TEST_DIR_H_
