#include "worker/data/dataset.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rigtune::data {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(DatasetTest, ParsesFormatNames) {
  EXPECT_EQ(*ParseDatasetFormat("messages"), DatasetFormat::kMessages);
  EXPECT_THAT(ParseDatasetFormat("chat").status().ToString(), HasSubstr("dataset.format"));
}

TEST(DatasetTest, AlpacaUsesTheStanfordPrompt) {
  DatasetStats stats;
  auto ex = ParseDataset(R"({"instruction": "Add", "input": "1 2", "output": "3"})", "d.jsonl",
                         DatasetFormat::kAlpaca, &stats);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_THAT((*ex)[0].prompt,
              StartsWith("Below is an instruction that describes a task, paired with an input"));
  EXPECT_THAT((*ex)[0].prompt, ::testing::EndsWith("### Input:\n1 2\n\n### Response:\n"));
  EXPECT_EQ((*ex)[0].completion, "3");
}

TEST(DatasetTest, MalformedLineNamesFileAndLine) {
  DatasetStats stats;
  auto ex = ParseDataset("{\"text\": \"a\"}\n\n{\"text\": oops}\n", "train.jsonl",
                         DatasetFormat::kText, &stats);
  ASSERT_FALSE(ex.ok());
  EXPECT_THAT(ex.status().ToString(), HasSubstr("train.jsonl:3:"));
}

TEST(DatasetTest, MissingFieldNamesTheField) {
  DatasetStats stats;
  auto ex = ParseDataset(R"({"instruction": "x"})", "a.jsonl", DatasetFormat::kAlpaca, &stats);
  EXPECT_THAT(ex.status().ToString(), HasSubstr("a.jsonl:1: missing field \"output\""));
}

TEST(DatasetTest, EmptyExamplesAreCountedAndSkipped) {
  DatasetStats stats;
  auto ex = ParseDataset("{\"text\": \"\"}\n{\"text\": \"b\"}\n", "t.jsonl", DatasetFormat::kText,
                         &stats);
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->size(), 1u);
  EXPECT_EQ(stats.records, 2);
  EXPECT_EQ(stats.empty, 1);
}

TEST(DatasetTest, ShareGptRolesAreMapped) {
  DatasetStats stats;
  auto ex = ParseDataset(
      R"({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})",
      "s.jsonl", DatasetFormat::kMessages, &stats);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ((*ex)[0].messages[1].role, "user");
  EXPECT_EQ((*ex)[0].messages[2].role, "assistant");
}

TEST(DatasetTest, UnknownRoleIsAnError) {
  DatasetStats stats;
  auto ex = ParseDataset(R"({"messages": [{"role": "robot", "content": "x"}]})", "m.jsonl",
                         DatasetFormat::kMessages, &stats);
  EXPECT_THAT(ex.status().ToString(), HasSubstr("m.jsonl:1: messages[0]: unknown role \"robot\""));
}

TEST(DatasetTest, ToolCallsAndToolTurnsKeepTheirFields) {
  DatasetStats stats;
  auto ex = ParseDataset(
      R"({"messages": [{"role": "user", "content": "w?"}, {"role": "assistant", "content": null,)"
      R"( "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"b": 1, "a": 2}}}]},)"
      R"( {"role": "tool", "tool_call_id": "c1", "content": "21"}]})",
      "m.jsonl", DatasetFormat::kMessages, &stats);
  ASSERT_TRUE(ex.ok()) << ex.status();
  const std::vector<Message>& m = (*ex)[0].messages;
  EXPECT_TRUE(m[1].extra["content"].is_null());
  EXPECT_EQ(m[1].extra["tool_calls"][0]["function"]["arguments"].dump(), R"({"b":1,"a":2})");
  EXPECT_EQ(m[2].role, "tool");
  EXPECT_EQ(m[2].content, "21");
  EXPECT_EQ(m[2].extra["tool_call_id"], "c1");
  EXPECT_EQ(stats.empty, 0);  // a tool call is something to train on
  EXPECT_TRUE((*ex)[0].tools.is_null());
}

TEST(DatasetTest, ToolsOfARecordAreKeptAndChecked) {
  DatasetStats stats;
  auto ex = ParseDataset(
      R"({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})"
      "\n"
      R"({"tools": "f", "messages": [{"role": "user", "content": "q"}]})",
      "t.jsonl", DatasetFormat::kMessages, &stats);
  EXPECT_THAT(ex.status().ToString(), HasSubstr("t.jsonl:2: field \"tools\" must be a list"));
  ex = ParseDataset(
      R"({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})",
      "t.jsonl", DatasetFormat::kMessages, &stats);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ((*ex)[0].tools.dump(), R"([{"type":"function"}])");
}

TEST(DatasetTest, ReadsJsonArrays) {
  DatasetStats stats;
  auto ex =
      ParseDataset(R"([{"text": "a"}, {"text": "b"}])", "a.json", DatasetFormat::kText, &stats);
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->size(), 2u);
  EXPECT_EQ((*ex)[1].line, 2);
}

TEST(DatasetTest, JsonArrayElementErrorsNameTheElement) {
  DatasetStats stats;
  auto ex =
      ParseDataset(R"([{"text": "a"}, {"txt": "b"}])", "a.json", DatasetFormat::kText, &stats);
  EXPECT_THAT(ex.status().ToString(), HasSubstr("a.json: element 2:"));
}

TEST(DatasetTest, MissingFileIsNotFound) {
  DatasetStats stats;
  EXPECT_EQ(ReadDataset("/nonexistent.jsonl", DatasetFormat::kText, &stats).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace rigtune::data
