// `lockstep plan` as a user runs it: JSON keys, exit codes, trace file.

#include "tests/tools/cli_runner.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

namespace lockstep {
namespace {

using test::run;
using test::temp_dir;

std::string config(const std::string& name) {
  return std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/" + name +
         ".yaml";
}

TEST(plan_cli, json_has_the_documented_keys) {
  temp_dir tmp;
  auto trace = (tmp / "trace.json").string();
  auto r = run(tmp, {"plan", config("groq-576"), "--model", "llama-2-70b",
                     "--context", "2048", "--fail-chip", "h0.c3", "--trace",
                     trace, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["verified"], true);
  EXPECT_GT(j["chips_used"].get<int>(), 300);
  EXPECT_EQ(j["spares"], 63); // one spare took over h0.c3
  EXPECT_GE(j["compile_s"].get<double>(), 0.0);
  EXPECT_EQ(j["plan_hash"].get<std::string>().size(), 64u);
  for (auto key : {"token_latency_us", "tokens_per_s_per_user", "ttft_ms",
                   "lower_bound_token_latency_us"})
    EXPECT_GT(j["predicted"][key].get<double>(), 0.0) << key;
  EXPECT_EQ(j["replanned"][0]["failed"], "h0.c3");
  // The largest batch (placement estimate; llama-2-70b at 2,048 tokens
  // fits more than one), and the bound's terms, which add up to its chain.
  EXPECT_GE(j["predicted"]["max_batch"].get<int>(), 2);
  const auto& b = j["lower_bound"];
  EXPECT_DOUBLE_EQ(b["total_us"].get<double>(),
                   j["predicted"]["lower_bound_token_latency_us"].get<double>());
  EXPECT_NEAR(b["compute_us"].get<double>() + b["op_overhead_us"].get<double>() +
                  b["link_latency_us"].get<double>() +
                  b["link_bytes_us"].get<double>() +
                  b["slot_rounding_us"].get<double>(),
              b["chain_us"].get<double>(), 1e-6);
  EXPECT_GE(b["min_tp_degree"].get<int>(), 2);
  EXPECT_EQ(b["largest_clique"], 8);
  // Two neighbouring nodes of the rack's ring (docs/planner.md).
  EXPECT_EQ(b["largest_diameter2_set"], 16);
  std::ifstream in{trace};
  auto t = nlohmann::json::parse(in);
  EXPECT_GT(t["traceEvents"].size(), 100u);
}

// --critical-path: the token's chain op by op and hop by hop, from the
// feed at slot 0 to the sample that ends the token, each starting where
// the one before it ended (a list schedule leaves no gaps on its path),
// and as many ops and hops as the summary counts.
TEST(plan_cli, critical_path_lists_the_tokens_chain) {
  temp_dir tmp;
  auto r = run(tmp, {"plan", config("groq-64"), "--model", "llama-3-8b",
                     "--context", "2048", "--critical-path", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto& cp = j["critical_path"];
  const auto& steps = cp["steps"];
  ASSERT_GT(steps.size(), 100u);
  EXPECT_EQ(steps.front()["what"], "feed");
  EXPECT_EQ(steps.front()["start_slot"], 0);
  EXPECT_EQ(steps.back()["what"], "sample");
  uint32_t ops = 0, hops = 0, at = 0, attention = 0;
  for (const auto& s : steps) {
    EXPECT_EQ(s["start_slot"].get<uint32_t>(), at) << s.dump();
    at = s["start_slot"].get<uint32_t>() + s["slots"].get<uint32_t>();
    bool hop = s["what"] == "transfer";
    hops += hop;
    ops += !hop;
    attention += s["what"] == "attention";
    EXPECT_EQ(s.contains("bytes"), hop) << s.dump();
  }
  EXPECT_EQ(ops, cp["ops"].get<uint32_t>());
  EXPECT_EQ(hops, cp["hops"].get<uint32_t>());
  EXPECT_EQ(attention, 32u); // every layer's attention is on it
  EXPECT_NEAR(at * j["slot_ns"].get<double>() / 1000.0,
              j["predicted"]["token_latency_us"].get<double>(), 1e-6);
  // Text: a header and one line per step.
  auto t = run(tmp, {"plan", config("groq-64"), "--model", "llama-3-8b",
                     "--context", "2048", "--critical-path"});
  ASSERT_EQ(t.code, 0) << t.err;
  auto from = t.out.find("path ");
  ASSERT_NE(from, std::string::npos) << t.out;
  EXPECT_EQ(size_t(std::count(t.out.begin() + from, t.out.end(), '\n')),
            steps.size() + 1);
}

// --sweep-batch: the curve over batch 1, 2, 4, ... and the largest batch
// that fits — which really is the largest: one more does not plan.
TEST(plan_cli, sweep_batch_finds_the_largest_batch_that_fits) {
  temp_dir tmp;
  auto r = run(tmp, {"plan", config("local-64"), "--model", "tiny-64",
                     "--context", "128", "--sweep-batch", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  int max_batch = j["max_batch"];
  ASSERT_GE(max_batch, 2);
  const auto& rows = j["sweep"];
  ASSERT_GE(rows.size(), 2u);
  EXPECT_EQ(rows[0]["batch"], 1);
  EXPECT_EQ(rows.back()["batch"], max_batch);
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_GT(rows[i]["batch"].get<int>(), rows[i - 1]["batch"].get<int>());
    // More users per step: never fewer tokens in aggregate.
    EXPECT_GE(rows[i]["aggregate_tokens_per_s"].get<double>(),
              rows[i - 1]["aggregate_tokens_per_s"].get<double>());
    EXPECT_EQ(rows[i]["verified"], true);
  }
  r = run(tmp, {"plan", config("local-64"), "--model", "tiny-64", "--context",
                "128", "--batch", std::to_string(max_batch), "-o", "json"});
  EXPECT_EQ(r.code, 0) << r.err;
  r = run(tmp, {"plan", config("local-64"), "--model", "tiny-64", "--context",
                "128", "--batch", std::to_string(max_batch + 1)});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("infeasible"), std::string::npos) << r.err;
  r = run(tmp, {"plan", config("local-64"), "--model", "tiny-64",
                "--sweep-batch", "--fail-chip", "h0.c3"});
  EXPECT_EQ(r.code, 2);
}

// --weights: the model of an imported store (no preset named), the same
// plan as the preset's when the store holds that shape; a generated store
// is not an import.
TEST(plan_cli, plans_an_imported_stores_model) {
  temp_dir tmp;
  auto gen = (tmp / "gen").string(), imp = (tmp / "imp").string();
  auto file = (tmp / "tiny-8.gguf").string();
  ASSERT_EQ(run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed",
                      "1", "--db", gen}).code, 0);
  ASSERT_EQ(run(tmp, {"weights", "export", "--db", gen, "--gguf", file}).code,
            0);
  ASSERT_EQ(run(tmp, {"weights", "import", "--gguf", file, "--db", imp}).code,
            0);
  auto r = run(tmp, {"plan", config("local-8"), "--weights", imp, "-o",
                     "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto preset = run(tmp, {"plan", config("local-8"), "--model", "tiny-8",
                          "-o", "json"});
  ASSERT_EQ(preset.code, 0) << preset.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["plan_hash"],
            nlohmann::json::parse(preset.out)["plan_hash"]);
  r = run(tmp, {"plan", config("local-8"), "--weights", gen});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("not an import"), std::string::npos) << r.err;
  r = run(tmp, {"plan", config("local-8")});
  EXPECT_EQ(r.code, 2);
}

TEST(plan_cli, bad_input_is_one_line_and_exit_code_2) {
  temp_dir tmp;
  auto bad_yaml = (tmp / "bad.yaml").string();
  std::ofstream{bad_yaml} << "name: x\nchip_profile: {name: c}\n";
  std::vector<std::vector<std::string>> cases{
      {"plan", config("local-8"), "--model", "llama-9000"},
      {"plan", (tmp / "missing.yaml").string(), "--model", "tiny-8"},
      {"plan", bad_yaml, "--model", "tiny-8"},
      {"plan", config("local-8"), "--model", "tiny-8", "--fail-chip", "h9.c9"},
      {"plan", config("local-8"), "--model", "tiny-8", "--fail-chip", "chip3"},
      {"plan", config("local-8"), "--model", "tiny-8", "--fail-chip",
       "h0.host"}, // a host endpoint is not a chip
      {"plan", config("local-8"), "--model", "tiny-8", "--batch", "0"},
      {"plan", config("local-8"), "--model", "llama-2-70b"}, // cannot fit
  };
  for (const auto& c : cases) {
    auto r = run(tmp, c);
    EXPECT_EQ(r.code, 2) << c[1] << " " << c.back() << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  auto r = run(tmp, {"plan", bad_yaml, "--model", "tiny-8"});
  EXPECT_NE(r.err.find("bad.yaml: chip_profile.sram_bytes: missing"),
            std::string::npos)
      << r.err;
}

} // namespace
} // namespace lockstep
