// A test fixture with a fresh folder of its own under /tmp (root_), removed
// after the test: the train tests write checkpoints and job outputs there.
#ifndef RIGTUNE_TESTS_WORKER_TRAIN_TEMP_ROOT_TEST_H_
#define RIGTUNE_TESTS_WORKER_TRAIN_TEMP_ROOT_TEST_H_

#include <stdlib.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

namespace rigtune::testing {

class TempRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rigtune_train_XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    const std::string cmd = "rm -rf '" + root_ + "'";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot remove " << root_;
  }
  std::string root_;
};

}  // namespace rigtune::testing

#endif  // RIGTUNE_TESTS_WORKER_TRAIN_TEMP_ROOT_TEST_H_
