// `lockstep generate --reference` as a user runs it: a real weight store,
// the built binary, pure-JSON output, and the golden tokens of
// tests/model/reference_engine_test.cpp reproduced through the store.

#include "tests/tools/cli_runner.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace lockstep {
namespace {

using test::result;
using test::run;
using test::temp_dir;

class generate_cli : public ::testing::Test {
protected:
  void SetUp() override {
    auto r = run(tmp_, {"weights", "init", "--model", "tiny-8", "--weight-seed",
                        "42", "--db", db_});
    ASSERT_EQ(r.code, 0) << r.err;
  }
  result generate(std::vector<std::string> extra) {
    std::vector<std::string> args{"generate", "--reference", "--db", db_,
                                  "--model",  "tiny-8",      "-o",   "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(tmp_, args);
  }
  temp_dir tmp_;
  std::string db_ = (tmp_ / "db").string();
};

TEST_F(generate_cli, greedy_tokens_and_logits_match_the_golden_run) {
  auto r = generate({"--prompt-tokens", "1,2,3", "--max-tokens", "12"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  auto j = nlohmann::json::parse(r.out); // throws unless pure JSON
  EXPECT_EQ(j["tokens"], (std::vector<int>{194, 840, 637, 475, 840, 269, 194,
                                           637, 269, 194, 635, 927}));
  EXPECT_EQ(j["logits_sha256"],
            "c42e40ddc60c1f1ee8ac3b100b1927dac7dd13ed40959bd1d9be7a39f4f22965");
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
}

TEST_F(generate_cli,
       seeded_sampling_matches_the_golden_run_on_any_thread_count) {
  for (auto threads : {"1", "2"}) {
    auto r = generate({"--prompt-tokens", "1,2,3", "--max-tokens", "12",
                       "--seed", "7", "--temperature", "0.8", "--top-k", "40",
                       "--top-p", "0.95", "--threads", threads});
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tokens"], (std::vector<int>{869, 488, 428, 57, 289, 128, 44,
                                             191, 311, 630, 850, 243}));
    EXPECT_EQ(
        j["logits_sha256"],
        "16f1ce4444c8db56aa36f7701b2db1f92ccbd5d5ffd8487f45cf0ed795fd8fd0");
  }
}

TEST_F(generate_cli, bad_input_is_one_line_and_exit_code_2) {
  std::vector<std::vector<std::string>> cases{
      {"--prompt-tokens", "1,x,3"},
      {"--prompt-tokens", ""},
      {"--prompt-tokens", "1,5000"},                    // outside vocab
      {"--prompt-tokens", "1", "--temperature", "abc"}, // bad number
      {"--prompt-tokens", "1", "--top-p", "1.5"},       // out of range
      {"--prompt-tokens", "1", "--max-tokens", "0"},
      {"--prompt-tokens", "1", "--max-tokens", "600"}, // past max_context
      {"--prompt-tokens", "1", "--no-such-flag"},
  };
  for (const auto& c : cases) {
    auto r = generate(c);
    EXPECT_EQ(r.code, 2) << c.back() << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
  }
  auto r = run(tmp_, {"generate", "--reference", "--db", db_, "--model",
                      "tiny-64", "--prompt-tokens", "1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("tiny-8"), std::string::npos) << r.err;
  r = run(tmp_, {"generate", "--reference", "--db", (tmp_ / "none").string(),
                 "--model", "tiny-8", "--prompt-tokens", "1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("none"), std::string::npos) << r.err;
  r = run(tmp_, {"generate", "--reference", "--db", db_, "--model",
                 "llama-9000", "--prompt-tokens", "1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("llama-9000"), std::string::npos) << r.err;
}

} // namespace
} // namespace lockstep
