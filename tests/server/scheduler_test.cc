#include "server/scheduler.h"

#include <filesystem>

#include "gtest/gtest.h"

namespace rigtune::server {
namespace {

std::vector<std::string> Ids(const std::vector<Placement>& placements) {
  std::vector<std::string> ids;
  for (const Placement& p : placements) ids.push_back(p.id);
  return ids;
}

TEST(SchedulerTest, PriorityThenFifo) {
  auto order = Scheduler::Order({{"a", 1, 0, 0}, {"b", 1, 5, 1}, {"c", 1, 0, 2}, {"d", 1, 5, 3}});
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0].id, "b");
  EXPECT_EQ(order[1].id, "d");
  EXPECT_EQ(order[2].id, "a");
  EXPECT_EQ(order[3].id, "c");
}

TEST(SchedulerTest, StartsWhatFitsAndAssignsDistinctGpus) {
  Scheduler scheduler({0, 1, 2}, 1);
  auto placements = scheduler.Schedule({{"a", 2, 0, 0}, {"b", 1, 0, 1}});
  ASSERT_EQ(Ids(placements), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(placements[0].gpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(placements[1].gpus, (std::vector<int>{2}));
  EXPECT_EQ(scheduler.free_gpus(), 0);
}

TEST(SchedulerTest, BigJobAtTheHeadHoldsBackSmallerGpuJobs) {
  Scheduler scheduler({0, 1}, 1);
  ASSERT_EQ(Ids(scheduler.Schedule({{"running", 1, 0, 0}})).size(), 1u);
  // "big" needs both GPUs; "small" would fit but must not overtake it.
  auto placements = scheduler.Schedule({{"big", 2, 0, 1}, {"small", 1, 0, 2}});
  EXPECT_TRUE(placements.empty());
  scheduler.Release("running");
  EXPECT_EQ(Ids(scheduler.Schedule({{"big", 2, 0, 1}, {"small", 1, 0, 2}})),
            (std::vector<std::string>{"big"}));
}

TEST(SchedulerTest, CpuJobsUseTheirOwnSlots) {
  Scheduler scheduler({}, 1);
  auto placements = scheduler.Schedule({{"a", 0, 0, 0}, {"b", 0, 0, 1}});
  EXPECT_EQ(Ids(placements), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(placements[0].gpus.empty());
  EXPECT_TRUE(scheduler.Schedule({{"b", 0, 0, 1}}).empty());
  scheduler.Release("a");
  EXPECT_EQ(Ids(scheduler.Schedule({{"b", 0, 0, 1}})), (std::vector<std::string>{"b"}));
}

TEST(SchedulerTest, CpuJobIsNotBlockedByAWaitingGpuJob) {
  Scheduler scheduler({0}, 1);
  scheduler.Reserve({"gpu-running", {0}});
  EXPECT_EQ(Ids(scheduler.Schedule({{"gpu-waiting", 1, 9, 0}, {"cpu", 0, 0, 1}})),
            (std::vector<std::string>{"cpu"}));
}

TEST(SchedulerTest, GpuInventoryParsing) {
  EXPECT_TRUE(ParseGpuInventory("none")->empty());
  EXPECT_EQ(*ParseGpuInventory("0,2"), (std::vector<int>{0, 2}));
  EXPECT_EQ(ParseGpuInventory("0,x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGpuInventory("1,1").status().code(), absl::StatusCode::kInvalidArgument);
  auto dir = std::filesystem::path(::testing::TempDir()) / "fake_proc_gpus";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "0000:01:00.0");
  std::filesystem::create_directories(dir / "0000:02:00.0");
  EXPECT_EQ(*ParseGpuInventory("auto", dir.string()), (std::vector<int>{0, 1}));
  EXPECT_TRUE(ParseGpuInventory("auto", (dir / "missing").string())->empty());
}

}  // namespace
}  // namespace rigtune::server
