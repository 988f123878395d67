#include "worker/data/loader.h"

#include <cstdio>
#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/data/char_tokenizer.h"
#include "worker/data/shuffle_rng.h"

namespace rigtune::data {
namespace {

using ::testing::HasSubstr;

std::vector<EncodedExample> Examples(int n) {
  std::vector<EncodedExample> out;
  for (int i = 0; i < n; ++i) {
    EncodedExample ex;
    const int len = 2 + i % 5;
    for (int k = 0; k < len; ++k) {
      ex.input_ids.push_back(1000 * i + k);
      ex.labels.push_back(k == 0 ? kIgnoreLabel : 1000 * i + k);
    }
    out.push_back(std::move(ex));
  }
  return out;
}

LoaderOptions Options(bool packing = true) {
  LoaderOptions o;
  o.context_length = 8;
  o.batch_size = 2;
  o.packing = packing;
  o.seed = 7;
  return o;
}

std::vector<int32_t> Take(DataLoader& loader, int batches) {
  std::vector<int32_t> ids;
  for (int i = 0; i < batches; ++i) {
    auto b = loader.Next();
    EXPECT_TRUE(b.ok()) << b.status();
    ids.insert(ids.end(), b->input_ids.begin(), b->input_ids.end());
    ids.push_back(-1);
  }
  return ids;
}

TEST(ShuffleRngTest, SequenceIsFixedBySeed) {
  ShuffleRng a(42), b(42), c(43);
  EXPECT_EQ(a.Next(), b.Next());
  EXPECT_NE(a.Next(), c.Next());
}

TEST(ShuffleRngTest, ShuffleIsAPermutation) {
  std::vector<int> v = {0, 1, 2, 3, 4, 5, 6, 7};
  ShuffleRng(1).Shuffle(&v);
  EXPECT_EQ(std::set<int>(v.begin(), v.end()).size(), 8u);
  EXPECT_NE(v, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(LoaderTest, SameSeedGivesSameBatches) {
  auto a = DataLoader::FromEncoded(Examples(40), Options(), 0);
  auto b = DataLoader::FromEncoded(Examples(40), Options(), 0);
  EXPECT_EQ(Take(**a, 12), Take(**b, 12));
}

TEST(LoaderTest, EpochsAreShuffledDifferently) {
  auto loader = DataLoader::FromEncoded(Examples(40), Options(false), 0);
  const int64_t n = (*loader)->batches_per_epoch();
  const auto first = Take(**loader, static_cast<int>(n));
  const auto second = Take(**loader, static_cast<int>(n));
  EXPECT_EQ((*loader)->epoch(), 1);
  EXPECT_NE(first, second);
}

TEST(LoaderTest, ResumedLoaderContinuesWithTheNextBatch) {
  auto straight = DataLoader::FromEncoded(Examples(40), Options(), 0);
  Take(**straight, 5);
  const std::string saved = (*straight)->position().ToJson();
  const auto expected = Take(**straight, 20);  // crosses into later epochs

  auto resumed = DataLoader::FromEncoded(Examples(40), Options(), 0);
  auto position = LoaderPosition::FromJson(saved);
  ASSERT_TRUE(position.ok()) << position.status();
  ASSERT_TRUE((*resumed)->Restore(*position).ok());
  EXPECT_EQ(Take(**resumed, 20), expected);
}

TEST(LoaderTest, PositionRoundTripsThroughJson) {
  LoaderPosition p{3, 17, 0xdeadbeefcafef00dull};
  auto back = LoaderPosition::FromJson(p.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->epoch, 3);
  EXPECT_EQ(back->batch, 17);
  EXPECT_EQ(back->rng_state, 0xdeadbeefcafef00dull);
}

TEST(LoaderTest, RanksGetDisjointRowsCoveringTheGlobalBatch) {
  LoaderOptions o = Options(false);
  o.world_size = 2;
  std::multiset<int32_t> seen;
  std::vector<std::multiset<int32_t>> per_rank(2);
  for (int rank = 0; rank < 2; ++rank) {
    o.rank = rank;
    auto loader = DataLoader::FromEncoded(Examples(40), o, -5);
    for (int32_t id : Take(**loader, 3)) {
      if (id >= 0) per_rank[rank].insert(id / 1000);
    }
  }
  for (int32_t example : per_rank[0]) EXPECT_EQ(per_rank[1].count(example), 0u);
  EXPECT_FALSE(per_rank[0].empty());
}

TEST(LoaderTest, EndsAfterTheConfiguredEpochs) {
  LoaderOptions o = Options();
  o.epochs = 1;
  auto loader = DataLoader::FromEncoded(Examples(40), o, 0);
  Take(**loader, static_cast<int>((*loader)->batches_per_epoch()));
  EXPECT_EQ((*loader)->Next().status().code(), absl::StatusCode::kNotFound);
}

TEST(LoaderTest, TooSmallDatasetIsAnError) {
  LoaderOptions o = Options(false);
  o.batch_size = 8;
  auto loader = DataLoader::FromEncoded(Examples(3), o, 0);
  EXPECT_THAT(loader.status().ToString(), HasSubstr("dataset too small"));
}

TEST(LoaderTest, PackingEfficiencyIsReported) {
  auto packed = DataLoader::FromEncoded(Examples(40), Options(true), 0);
  auto padded = DataLoader::FromEncoded(Examples(40), Options(false), 0);
  EXPECT_GT((*packed)->stats().packing_efficiency, (*padded)->stats().packing_efficiency);
  EXPECT_LE((*packed)->stats().packing_efficiency, 1.0);
}

TEST(LoaderTest, CreateCountsTruncatedExamples) {
  const std::string path = ::testing::TempDir() + "/loader_test.jsonl";
  std::ofstream(path) << "{\"text\": \"abc\"}\n{\"text\": \"abcdefghijklmnop\"}\n{\"text\": \"\"}\n"
                      << "{\"text\": \"xy\"}\n";
  auto tok = testing::MakeTokenizer(testing::CharTokenizerJson());
  LoaderOptions o = Options();
  o.dataset_path = path;
  o.format = DatasetFormat::kText;
  o.batch_size = 1;
  auto loader = DataLoader::Create(o, *tok);
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_EQ((*loader)->stats().records, 4);
  EXPECT_EQ((*loader)->stats().empty, 1);
  EXPECT_EQ((*loader)->stats().truncated, 1);
  EXPECT_EQ((*loader)->stats().dropped_eos, 1);
  std::remove(path.c_str());
}

TEST(LoaderTest, CreateReportsRenderErrorsWithFileAndLine) {
  const std::string path = ::testing::TempDir() + "/loader_chat.jsonl";
  std::ofstream(path) << "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                         "{\"role\": \"user\", \"content\": \"b\"}, {\"role\": \"assistant\", "
                         "\"content\": \"c\"}]}\n";
  nlohmann::json config = testing::CharTokenizerConfig();
  config["chat_template"] =
      "{{ bos_token }}{% for message in messages %}"
      "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('roles must alternate') }}{% endif %}{% if message['role'] == 'user' %}"
      "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + "
      "eos_token }}"
      "{% endif %}{% endfor %}";
  auto tok = testing::MakeTokenizer(testing::CharTokenizerJson(), config);
  LoaderOptions o = Options();
  o.dataset_path = path;
  o.format = DatasetFormat::kMessages;
  auto loader = DataLoader::Create(o, *tok);
  EXPECT_THAT(loader.status().ToString(), HasSubstr(path + ":1: "));
  EXPECT_THAT(loader.status().ToString(), HasSubstr("line 1: the template raised: roles must alternate"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace rigtune::data
