#include "worker/train/device_memory.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace rigtune::train {
namespace {

TEST(PreferExpandableSegmentsTest, SetsExpandableSegmentsWhenNothingIsConfigured) {
  unsetenv("PYTORCH_ALLOC_CONF");
  unsetenv("PYTORCH_CUDA_ALLOC_CONF");
  PreferExpandableSegments();
  const char* conf = std::getenv("PYTORCH_CUDA_ALLOC_CONF");
  ASSERT_NE(conf, nullptr);
  EXPECT_EQ(std::string(conf), "expandable_segments:True");
  unsetenv("PYTORCH_CUDA_ALLOC_CONF");
}

TEST(PreferExpandableSegmentsTest, KeepsTheOperatorsSettings) {
  unsetenv("PYTORCH_CUDA_ALLOC_CONF");
  setenv("PYTORCH_ALLOC_CONF", "max_split_size_mb:256", 1);
  PreferExpandableSegments();
  EXPECT_EQ(std::getenv("PYTORCH_CUDA_ALLOC_CONF"), nullptr);
  unsetenv("PYTORCH_ALLOC_CONF");

  setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False", 1);
  PreferExpandableSegments();
  EXPECT_EQ(std::string(std::getenv("PYTORCH_CUDA_ALLOC_CONF")), "expandable_segments:False");
  unsetenv("PYTORCH_CUDA_ALLOC_CONF");
}

}  // namespace
}  // namespace rigtune::train
