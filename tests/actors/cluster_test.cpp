// The cluster as users run it: `lockstep up` starts real `lockstepd`
// processes (one per host of the config) that join the head, load their
// tiles into per-chip arenas and run the plan over the slotted libfabric
// transport; `lockstep generate` talks to the running cluster; `down`
// leaves nothing behind. The headline: tokens and logits hashes equal the
// reference engine's, bit for bit. Each test has its own context file
// (LOCKSTEP_CONTEXT), so clusters never see each other's.

#include "model/generation.hpp"
#include "tests/actors/reference_run.hpp"
#include "tests/storage/synthetic_gguf.hpp"
#include "storage/store.hpp"
#include "storage/weight_store.hpp"
#include "tests/tools/cli_runner.hpp"
#include "tools/testing/local_cluster.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace lockstep {
namespace {

using test::result;
using test::run;
using test::temp_dir;
using namespace std::chrono_literals;

std::string config_path(const std::string& name) {
  return std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/" + name +
         ".yaml";
}

using test::reference;

class cluster : public ::testing::Test {
protected:
  void SetUp() override {
    ::setenv("LOCKSTEP_CONTEXT", (tmp_ / "context.json").c_str(), 1);
  }
  void TearDown() override {
    // Whatever happened, leave no processes behind.
    run(tmp_, {"down"});
    ::unsetenv("LOCKSTEP_CONTEXT");
  }

  result up(const std::string& config, const std::string& model,
            std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"up",       config_path(config), "--model",
                                  model,      "--db-root",
                                  (tmp_ / "run").string(), "-o", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(tmp_, args);
  }

  nlohmann::json generate(std::vector<std::string> extra) {
    std::vector<std::string> args{"generate", "-o", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run(tmp_, args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json{};
  }

  nlohmann::json status() {
    auto r = run(tmp_, {"status", "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json{};
  }

  std::vector<int> pids() {
    std::ifstream in{tmp_ / "context.json"};
    auto j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() ? j["pids"].get<std::vector<int>>()
                         : std::vector<int>{};
  }

  temp_dir tmp_;
};

bool runs(int pid) {
  return testing::process_runs(pid);
}

// Every used chip ran ops in every step the cluster ran.
void expect_work_spread(const nlohmann::json& st) {
  uint64_t steps = st["steps_run"];
  EXPECT_GT(steps, 0u);
  EXPECT_FALSE(st["chips"].empty());
  for (const auto& c : st["chips"]) {
    EXPECT_EQ(c["steps_run"].get<uint64_t>(), steps) << c.dump();
    EXPECT_GE(c["ops_run"].get<uint64_t>(), steps) << c.dump();
  }
}

TEST_F(cluster, local_8_is_bit_identical_to_the_reference) {
  auto r = up("local-8", "tiny-8");
  ASSERT_EQ(r.code, 0) << r.err;
  auto started = nlohmann::json::parse(r.out);
  EXPECT_EQ(started["hosts"], 1);
  // Greedy, then seeded sampling.
  auto g = generate({"--prompt-tokens", "1,2,3", "--max-tokens", "12"});
  auto want = reference("tiny-8", {0, {1, 2, 3}, 12, {}, 0});
  EXPECT_EQ(g["tokens"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(g["logits_sha256"], want.logits_sha256);
  EXPECT_GT(g["ttft_ms"].get<double>(), 0.0);
  EXPECT_GT(g["tokens_per_s"].get<double>(), 0.0);
  auto s = generate({"--prompt-tokens", "7,7,1", "--max-tokens", "8", "--seed",
                     "5", "--temperature", "0.8", "--top-k", "40", "--top-p",
                     "0.9"});
  auto want_s = reference("tiny-8", {0, {7, 7, 1}, 8, {5, 0.8f, 40, 0.9f}, 0});
  EXPECT_EQ(s["tokens"].get<std::vector<int32_t>>(), want_s.tokens);
  EXPECT_EQ(s["logits_sha256"], want_s.logits_sha256);
  // A prompt longer than a prefill chunk: several chunks, same bits.
  std::vector<int32_t> long_prompt;
  std::string arg;
  for (int i = 0; i < 70; ++i) {
    long_prompt.push_back((i * 7) % 50 + 1);
    arg += (i ? "," : "") + std::to_string(long_prompt.back());
  }
  auto l = generate({"--prompt-tokens", arg, "--max-tokens", "5"});
  auto want_l = reference("tiny-8", {0, long_prompt, 5, {}, 0});
  EXPECT_EQ(l["tokens"].get<std::vector<int32_t>>(), want_l.tokens);
  EXPECT_EQ(l["logits_sha256"], want_l.logits_sha256);
  std::this_thread::sleep_for(1500ms); // a heartbeat with the counters
  auto st = status();
  ASSERT_EQ(st["prefill_program"], true);
  int chunk = st["prefill_chunk_tokens"];
  EXPECT_EQ(st["prefill_steps_run"], 2 + (70 + chunk - 1) / chunk);
  EXPECT_EQ(st["decode_steps_run"], 11 + 7 + 4);
  expect_work_spread(st);
}

TEST_F(cluster, local_64_in_8_processes_serves_concurrent_requests) {
  auto r = up("local-64", "tiny-64", {"--batch", "2", "--context", "256"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto procs = pids();
  EXPECT_EQ(procs.size(), 8u);
  // Two requests at once, batched together; each equals its own reference.
  auto g = generate({"--prompt-tokens", "1,2,3", "--prompt-tokens",
                     "9,8,7,6,5", "--max-tokens", "6", "--seed", "3",
                     "--temperature", "0.7"});
  ASSERT_EQ(g["requests"].size(), 2u);
  std::vector<model::generation_request> reqs{
      {0, {1, 2, 3}, 6, {3, 0.7f, 0, 1.0f}, 0},
      {0, {9, 8, 7, 6, 5}, 6, {3, 0.7f, 0, 1.0f}, 0}};
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto want = reference("tiny-64", reqs[i]);
    EXPECT_EQ(g["requests"][i]["tokens"].get<std::vector<int32_t>>(),
              want.tokens)
        << i;
    EXPECT_EQ(g["requests"][i]["logits_sha256"], want.logits_sha256) << i;
  }
  std::this_thread::sleep_for(1500ms);
  auto st = status();
  expect_work_spread(st);
  EXPECT_EQ(st["hosts"].size(), 8u);
  // Down: every process gone, the context removed.
  auto d = run(tmp_, {"down"});
  EXPECT_EQ(d.code, 0) << d.err;
  for (int p : procs)
    EXPECT_FALSE(runs(p)) << "pid " << p << " still runs";
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "context.json"));
  // Each host's store holds its own chips' tiles only.
  for (int h = 0; h < 8; ++h) {
    auto db = storage::store::open(tmp_ / "run" / ("host-" + std::to_string(h)),
                                   {.read_only = true});
    ASSERT_TRUE(db) << render(db.error());
    auto m = storage::read_manifest(**db);
    ASSERT_TRUE(m && *m);
    EXPECT_TRUE((*m)->partial) << "host " << h;
    EXPECT_FALSE((*m)->shards.empty()) << "host " << h;
  }
}

// Slot misses summed over every link of the cluster.
uint64_t slot_misses(const nlohmann::json& st) {
  uint64_t n = 0;
  for (const auto& l : st["links"])
    n += l["slot_misses"].get<uint64_t>();
  return n;
}

// Paced: every transfer leaves in its slot of the shared clock, so no slot
// may be missed, and the outputs are the reference's, bit for bit, again
// after the cluster idled (the head re-anchors the schedule). Slots are
// 50 ms: this VM wakes a sleeping thread late (a 1 ms sleep overshoots by
// p50 0.1 ms, p99 1.2 ms, max 9 ms in a minute idle; 10-17 ms with the
// cluster's processes busy), and at 20 ms CI saw 2 misses in 16 steps once.
// The first request is a warm-up (it still must be bit-identical): a full
// CI run saw 1 miss at 50 ms once in ~20 runs (2026-12-05), and the cluster
// bench sees misses only in its warm-up request. Why is not known: the
// arenas are prefaulted at up (sram_arena::prefault), so it is not their
// first touch; the first steps' code paths and caches are cold. The requests after
// it, including one after the cluster idled and re-anchored, miss none.
TEST_F(cluster, paced_local_8_is_bit_identical_and_once_warm_misses_no_slot) {
  auto r = up("local-8", "tiny-8", {"--slot-mode", "paced", "--slot-us", "50000"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto want = reference("tiny-8", {0, {1, 2}, 3, {}, 0});
  uint64_t warm_up_misses = 0;
  for (int i = 0; i < 3; ++i) {
    auto g = generate({"--prompt-tokens", "1,2", "--max-tokens", "3"});
    EXPECT_EQ(g["tokens"].get<std::vector<int32_t>>(), want.tokens) << i;
    EXPECT_EQ(g["logits_sha256"], want.logits_sha256) << i;
    if (i == 0) {
      // Counters arrive with the hosts' heartbeats: wait for the next.
      std::this_thread::sleep_for(1500ms);
      warm_up_misses = slot_misses(status());
    }
    if (i == 1)
      std::this_thread::sleep_for(1500ms); // idle, and a heartbeat
  }
  std::this_thread::sleep_for(1500ms);
  auto st = status();
  EXPECT_EQ(st["slot_mode"], "paced");
  RecordProperty("warm_up_slot_misses", std::to_string(warm_up_misses));
  EXPECT_EQ(slot_misses(st) - warm_up_misses, 0u)
      << warm_up_misses << " in the warm-up request";
  // Paced: prompts a token a decode step (actors/detail/programs.hpp).
  EXPECT_EQ(st["prefill_program"], false);
  EXPECT_EQ(st["prefill_steps_run"], 0);
  EXPECT_EQ(st["decode_steps_run"], 3 * (2 + 3 - 1));
  expect_work_spread(st);
}

// local-64 spreads every step over 8 processes, so one stalled process
// anywhere misses a slot: CI saw 3 misses at 20 ms, and here, with two busy
// loops beside the cluster, one process in four runs stalled 55-186 ms once.
// So this test uses 50 ms slots and short requests (~320 slots a step).
// As on local-8 (above), the first request is a warm-up that must still be
// bit-identical: a full CI run (2026-12-05, evening) saw 3 misses at 50 ms
// in a cold two-step request, on an otherwise idle machine. The request
// after it must miss none.
TEST_F(cluster, paced_local_64_is_bit_identical_and_once_warm_misses_no_slot) {
  auto r = up("local-64", "tiny-64",
              {"--slot-mode", "paced", "--slot-us", "50000"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto warm = generate({"--prompt-tokens", "5", "--max-tokens", "1"});
  auto want_warm = reference("tiny-64", {0, {5}, 1, {}, 0});
  EXPECT_EQ(warm["tokens"].get<std::vector<int32_t>>(), want_warm.tokens);
  EXPECT_EQ(warm["logits_sha256"], want_warm.logits_sha256);
  // Counters arrive with the hosts' heartbeats: wait for the next.
  std::this_thread::sleep_for(1500ms);
  uint64_t warm_up_misses = slot_misses(status());
  auto g = generate({"--prompt-tokens", "5", "--max-tokens", "2"});
  auto want = reference("tiny-64", {0, {5}, 2, {}, 0});
  EXPECT_EQ(g["tokens"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(g["logits_sha256"], want.logits_sha256);
  std::this_thread::sleep_for(1500ms);
  auto st = status();
  RecordProperty("warm_up_slot_misses", std::to_string(warm_up_misses));
  EXPECT_EQ(slot_misses(st) - warm_up_misses, 0u)
      << warm_up_misses << " in the warm-up request";
  expect_work_spread(st);
}

// Late data is consumed, not dropped: with every send held 3 ms past its
// 1 ms slot, transfers miss their slots (and are counted), and the tokens
// and logits are still the reference's.
TEST_F(cluster, paced_slot_misses_change_no_output) {
  auto r = up("local-8", "tiny-8",
              {"--slot-mode", "paced", "--slot-us", "1000",
               "--inject-send-delay-us", "3000"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto g = generate({"--prompt-tokens", "4,2", "--max-tokens", "4"});
  auto want = reference("tiny-8", {0, {4, 2}, 4, {}, 0});
  EXPECT_EQ(g["tokens"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(g["logits_sha256"], want.logits_sha256);
  std::this_thread::sleep_for(1500ms);
  EXPECT_GT(slot_misses(status()), 0u);
}

// CPU seconds (user + system) a process has used, from /proc.
double cpu_seconds(int pid) {
  auto f = testing::figures_of(pid);
  return f ? f->cpu_s : 0;
}

// Nothing spins: an idle local-64 (8 processes, 62 chip actors, progress
// threads, heartbeats) uses well under a tenth of one core in sum.
TEST_F(cluster, an_idle_cluster_does_not_spin) {
  auto r = up("local-64", "tiny-64");
  ASSERT_EQ(r.code, 0) << r.err;
  generate({"--prompt-tokens", "1", "--max-tokens", "2"}); // warm
  std::this_thread::sleep_for(1s);
  auto procs = pids();
  ASSERT_EQ(procs.size(), 8u);
  auto total = [&] {
    double s = 0;
    for (int p : procs)
      s += cpu_seconds(p);
    return s;
  };
  double before = total();
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(5s);
  double wall = std::chrono::duration<double>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
  double percent = 100.0 * (total() - before) / wall;
  EXPECT_LT(percent, 10.0) << "idle local-64 used " << percent
                           << "% of one core";
}

// A GGUF model (tiny-64's shape, other weights, f16, its LM head tied to
// the embedding) imported into a store runs on local-64 from that store
// alone (`up --weights`, no --model): its 8 hosts read it at once and load
// their shards (the head chips' lm_head slices from the embedding's
// tiles); tokens and logits equal the reference engine's on the store.
TEST_F(cluster, an_imported_gguf_model_runs_as_in_the_reference) {
  auto spec = *model::find_preset("tiny-64");
  spec.weight_dtype = model::dtype::f16;
  auto file = tmp_ / "tiny-64.gguf";
  ASSERT_FALSE(test::synthetic_llama(spec, /*tied=*/true, 5).write(file));
  auto store = (tmp_ / "imported").string();
  auto r = run(tmp_, {"weights", "import", "--gguf", file.string(), "--db",
                      store});
  ASSERT_EQ(r.code, 0) << r.err;
  std::filesystem::remove(file);
  std::vector<std::string> prompt{"--prompt-tokens", "5,6,7,8", "--max-tokens",
                                  "6"};
  std::vector<std::string> ref{"generate", "--reference", "--db", store, "-o",
                               "json"};
  ref.insert(ref.end(), prompt.begin(), prompt.end());
  r = run(tmp_, ref);
  ASSERT_EQ(r.code, 0) << r.err;
  auto want = nlohmann::json::parse(r.out);
  r = run(tmp_, {"up", config_path("local-64"), "--weights", store,
                 "--db-root", (tmp_ / "run").string(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto got = generate(prompt);
  EXPECT_EQ(got["tokens"], want["tokens"]);
  EXPECT_EQ(got["logits_sha256"], want["logits_sha256"]);
  EXPECT_EQ(status()["dtype"], "f16");
  // Not tiny-64's generated weights: other logits.
  auto generated = reference("tiny-64", {0, {5, 6, 7, 8}, 6, {}, 0});
  EXPECT_NE(got["logits_sha256"], generated.logits_sha256);
}

TEST_F(cluster, refusals_are_clear_and_nothing_hangs) {
  // No cluster: one line, non-zero, fast.
  auto t0 = std::chrono::steady_clock::now();
  auto g = run(tmp_, {"generate", "--prompt-tokens", "1"});
  EXPECT_NE(g.code, 0);
  EXPECT_NE(g.err.find("no cluster is up"), std::string::npos) << g.err;
  auto st = run(tmp_, {"status"});
  EXPECT_NE(st.code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  auto r = up("local-8", "tiny-8");
  ASSERT_EQ(r.code, 0) << r.err;
  // Up while up is refused, naming the cluster.
  auto again = up("local-8", "tiny-8");
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("local-8"), std::string::npos) << again.err;
  // A host with a wrong token is refused, on both sides.
  std::ifstream in{tmp_ / "context.json"};
  auto ctx = nlohmann::json::parse(in);
  auto log = tmp_ / "intruder.log";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("LOCKSTEP_CLUSTER_TOKEN", "not-the-token", 1);
    std::freopen(log.c_str(), "w", stderr);
    std::string daemon = std::filesystem::path{LOCKSTEP_CLI_PATH}
                             .parent_path() /
                         "lockstepd";
    std::string cfg = config_path("local-8"), head = ctx["head"];
    std::string db = (tmp_ / "intruder-db").string();
    ::execl(daemon.c_str(), daemon.c_str(), "--config", cfg.c_str(),
            "--rank", "0", "--head", head.c_str(), "--db", db.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status_code = 0;
  ::waitpid(pid, &status_code, 0);
  EXPECT_EQ(WEXITSTATUS(status_code), 2);
  auto text = test::slurp(log);
  EXPECT_NE(text.find("wrong cluster token"), std::string::npos) << text;
  // A request the plan cannot serve: refused with exit 2, the cluster
  // unharmed.
  auto bad = run(tmp_, {"generate", "--prompt-tokens", "99999"});
  EXPECT_EQ(bad.code, 2) << bad.err;
  auto good = generate({"--prompt-tokens", "1,2,3", "--max-tokens", "2"});
  EXPECT_EQ(good["tokens"].size(), 2u);
}

} // namespace
} // namespace lockstep
