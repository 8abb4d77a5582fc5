// `lockstep generate --reference` as a user runs it: a real weight store,
// the built binary, pure-JSON output, and the golden tokens of
// tests/model/reference_engine_test.cpp reproduced through the store.

#include "tests/storage/synthetic_gguf.hpp"
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

// --simulate: a plan for a local cluster, every chip in the process, the
// same tokens and logits as --reference, and counts that are the plan's.
TEST_F(generate_cli, simulate_equals_reference_and_counts_what_the_plan_lists) {
  auto config = std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/local-8.yaml";
  std::vector<std::string> prompt{"--prompt-tokens", "1,2,3", "--max-tokens",
                                  "12"};
  auto ref = generate(prompt);
  ASSERT_EQ(ref.code, 0) << ref.err;
  auto args = prompt;
  args.insert(args.begin(), {"--simulate", config});
  auto r = run(tmp_, [&] {
    std::vector<std::string> a{"generate", "--db", db_, "--model", "tiny-8",
                               "-o", "json"};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }());
  ASSERT_EQ(r.code, 0) << r.err;
  auto sim = nlohmann::json::parse(r.out);
  auto want = nlohmann::json::parse(ref.out);
  EXPECT_EQ(sim["tokens"], want["tokens"]);
  EXPECT_EQ(sim["logits_sha256"], want["logits_sha256"]);
  EXPECT_GT(sim["tokens_per_s"].get<double>(), 0.0);
  // The plan's own counts, per step, times the steps run.
  auto plan = run(tmp_, {"plan", config, "--model", "tiny-8", "-o", "json"});
  ASSERT_EQ(plan.code, 0) << plan.err;
  auto p = nlohmann::json::parse(plan.out);
  uint64_t prefill = sim["prefill_steps"], decode = sim["decode_steps"];
  EXPECT_EQ(decode, 11u);
  EXPECT_EQ(sim["ops_executed"].get<uint64_t>(),
            prefill * p["prefill"]["ops"].get<uint64_t>() +
                decode * p["decode"]["ops"].get<uint64_t>());
  EXPECT_EQ(sim["bytes_transferred"].get<uint64_t>(),
            prefill * p["prefill"]["transfer_bytes"].get<uint64_t>() +
                decode * p["decode"]["transfer_bytes"].get<uint64_t>());
}

// A GGUF of tiny-8's weights (seed 42), imported: the store's own model
// (no --model) gives the golden run's tokens and logits, in the reference
// and in the simulated local-8; deep verification compares with the file.
TEST_F(generate_cli, an_imported_gguf_runs_the_golden_tokens) {
  auto file = tmp_ / "tiny-8.gguf";
  ASSERT_FALSE(test::synthetic_llama(*model::find_preset("tiny-8"), false, 42)
                   .write(file));
  auto imported = (tmp_ / "imported").string();
  auto r = run(tmp_, {"weights", "import", "--gguf", file.string(), "--db",
                      imported, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["source"], "gguf:tiny-8.gguf");
  EXPECT_EQ(report["model"]["name"], "tiny-8");
  auto config =
      std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/local-8.yaml";
  for (bool simulate : {false, true}) {
    std::vector<std::string> a{"generate", "--db", imported, "--prompt-tokens",
                               "1,2,3", "--max-tokens", "12", "-o", "json"};
    if (simulate)
      a.insert(a.begin() + 1, {"--simulate", config});
    else
      a.insert(a.begin() + 1, "--reference");
    r = run(tmp_, a);
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tokens"], (std::vector<int>{194, 840, 637, 475, 840, 269, 194,
                                             637, 269, 194, 635, 927}))
        << simulate;
    EXPECT_EQ(j["logits_sha256"],
              "c42e40ddc60c1f1ee8ac3b100b1927dac7dd13ed40959bd1d9be7a39f4f22965")
        << simulate;
  }
  r = run(tmp_, {"weights", "verify", "--db", imported, "--deep"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("was imported from gguf:tiny-8.gguf"),
            std::string::npos)
      << r.err;
  r = run(tmp_, {"weights", "verify", "--db", imported, "--deep", "--gguf",
                 file.string()});
  EXPECT_EQ(r.code, 0) << r.err;
  // A --model the store does not hold is an error, not a silent override.
  r = run(tmp_, {"generate", "--reference", "--db", imported, "--model",
                 "tiny-64", "--prompt-tokens", "1"});
  EXPECT_EQ(r.code, 2);
}

TEST_F(generate_cli, several_prompts_are_several_requests) {
  auto config = std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/local-8.yaml";
  std::vector<std::string> prompts{"--prompt-tokens", "1,2,3",
                                   "--prompt-tokens", "9,8,7,6,5",
                                   "--max-tokens",    "5",
                                   "--seed",          "3",
                                   "--temperature",   "0.7"};
  auto ref = generate(prompts);
  ASSERT_EQ(ref.code, 0) << ref.err;
  auto j = nlohmann::json::parse(ref.out);
  ASSERT_EQ(j["requests"].size(), 2u);
  EXPECT_NE(j["requests"][0]["logits_sha256"], j["requests"][1]["logits_sha256"]);
  // Each request equals its own run alone (request ids follow the order).
  auto alone = generate({"--prompt-tokens", "1,2,3", "--max-tokens", "5",
                         "--seed", "3", "--temperature", "0.7"});
  ASSERT_EQ(alone.code, 0) << alone.err;
  EXPECT_EQ(j["requests"][0]["tokens"], nlohmann::json::parse(alone.out)["tokens"]);
  // Two sequences' KV caches fit local-8 at a shorter context.
  std::vector<std::string> a{"generate", "--simulate", config, "--context",
                             "128", "--db", db_, "--model", "tiny-8", "-o",
                             "json"};
  a.insert(a.end(), prompts.begin(), prompts.end());
  auto r = run(tmp_, a);
  ASSERT_EQ(r.code, 0) << r.err;
  auto sim = nlohmann::json::parse(r.out);
  EXPECT_EQ(sim["requests"], j["requests"]);
}

TEST_F(generate_cli, simulate_refuses_what_it_cannot_run_with_exit_2) {
  auto cfg = [](const std::string& name) {
    return std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/" + name +
           ".yaml";
  };
  auto sim = [&](std::vector<std::string> extra) {
    std::vector<std::string> a{"generate", "--db",  db_,
                               "--model",  "tiny-8", "--prompt-tokens", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return run(tmp_, a);
  };
  // A machine this one cannot hold: both figures named.
  auto r = sim({"--simulate", cfg("groq-576")});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("132.5 GB"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("available"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (auto extra : std::vector<std::vector<std::string>>{
           {},                                               // neither mode
           {"--reference", "--simulate", cfg("local-8")},    // both
           {"--simulate", cfg("no-such-config")},            // missing file
           {"--simulate", cfg("local-8"), "--fail-chip", "h0.host"},
           {"--simulate", cfg("local-8"), "--fail-chip", "h9.c0"},
           {"--simulate", cfg("local-8"), "--batch", "0"},
           {"--simulate", cfg("local-8"), "--context", "100000"},
       }) {
    r = sim(extra);
    EXPECT_EQ(r.code, 2) << (extra.empty() ? "" : extra.back()) << ": "
                         << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

} // namespace
} // namespace lockstep
