#include "server/job_state.h"

#include "gtest/gtest.h"

namespace rigtune::server {
namespace {

using rigtune::v1::Job;

constexpr State kAll[] = {Job::QUEUED,   Job::STARTING,   Job::RUNNING,
                          Job::PAUSING,  Job::PAUSED,     Job::CANCELLING,
                          Job::CANCELLED, Job::SUCCEEDED, Job::FAILED};

TEST(JobStateTest, TerminalStatesNeverChange) {
  for (State from : {Job::CANCELLED, Job::SUCCEEDED, Job::FAILED}) {
    EXPECT_TRUE(IsTerminal(from));
    for (State to : kAll) {
      EXPECT_FALSE(CheckTransition(from, to).ok()) << StateName(from) << "->" << StateName(to);
    }
  }
}

TEST(JobStateTest, EveryNonTerminalStateCanEnd) {
  for (State from : kAll) {
    if (IsTerminal(from)) continue;
    bool can_end = CheckTransition(from, Job::CANCELLED).ok() ||
                   CheckTransition(from, Job::CANCELLING).ok();
    EXPECT_TRUE(can_end) << StateName(from);
  }
}

TEST(JobStateTest, HappyPath) {
  EXPECT_TRUE(CheckTransition(Job::QUEUED, Job::STARTING).ok());
  EXPECT_TRUE(CheckTransition(Job::STARTING, Job::RUNNING).ok());
  EXPECT_TRUE(CheckTransition(Job::RUNNING, Job::SUCCEEDED).ok());
}

TEST(JobStateTest, RetryGoesBackToTheQueue) {
  EXPECT_TRUE(CheckTransition(Job::RUNNING, Job::QUEUED).ok());
  EXPECT_TRUE(CheckTransition(Job::STARTING, Job::QUEUED).ok());
}

TEST(JobStateTest, IllegalJumpsNameBothStates) {
  absl::Status status = CheckTransition(Job::QUEUED, Job::SUCCEEDED);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("QUEUED"), std::string::npos);
  EXPECT_NE(status.message().find("SUCCEEDED"), std::string::npos);
  EXPECT_FALSE(CheckTransition(Job::RUNNING, Job::STARTING).ok());
  EXPECT_FALSE(CheckTransition(Job::PAUSED, Job::RUNNING).ok());
  EXPECT_FALSE(CheckTransition(Job::CANCELLING, Job::PAUSED).ok());
  EXPECT_FALSE(CheckTransition(Job::RUNNING, Job::RUNNING).ok());
}

TEST(JobStateTest, WorkersExistOnlyInActiveStates) {
  EXPECT_TRUE(HasWorkers(Job::RUNNING));
  EXPECT_TRUE(HasWorkers(Job::CANCELLING));
  EXPECT_FALSE(HasWorkers(Job::QUEUED));
  EXPECT_FALSE(HasWorkers(Job::PAUSED));
}

}  // namespace
}  // namespace rigtune::server
