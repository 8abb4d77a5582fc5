// Clusters at the mission's scale and under many users, through the
// local-cluster harness (tools/testing/local_cluster.hpp): local-512 and
// local-1500 (512 / 1500 chip actors in 8 / 12 processes) equal the
// reference bit for bit; requests that arrive while others run join at a
// step boundary and each equals its own reference run; a long prompt goes
// through the prefill program in chunks beside a decoding request; a full admission
// queue refuses at once with `overloaded:` and exit 3, touching nothing
// admitted; Ctrl-C of a `generate` frees its batch slot.

#include "model/generation.hpp"
#include "tests/actors/reference_run.hpp"
#include "tools/testing/local_cluster.hpp"

#include <gtest/gtest.h>

#include <signal.h>

#include <map>
#include <thread>

namespace lockstep {
namespace {

using testing::cluster_options;
using testing::local_cluster;
using namespace std::chrono_literals;

using test::reference;

cluster_options options(const std::string& config, const std::string& model,
                        uint32_t batch = 1, uint32_t context = 0,
                        uint32_t max_queue = 64) {
  cluster_options o;
  o.config = config;
  o.model = model;
  o.batch = batch;
  o.context = context;
  o.max_queue = max_queue;
  return o;
}

local_cluster start(cluster_options o) {
  auto c = local_cluster::start(std::move(o));
  if (!c)
    throw std::runtime_error(render(c.error()));
  return std::move(*c);
}

void expect_reference(const caf::expected<actors::cluster_generation>& got,
                      const model::generation_result& want,
                      const std::string& what) {
  ASSERT_TRUE(got) << what << ": " << render(got.error());
  EXPECT_EQ(got->tokens, want.tokens) << what;
  EXPECT_EQ(got->logits_sha256, want.logits_sha256) << what;
}

// Whether the head's status shows `key` == `value` within ~10 s.
bool wait_for_status(local_cluster& c, const char* key, int value) {
  for (int i = 0; i < 500; ++i) {
    auto st = c.status();
    if (st && (*st)[key] == value)
      return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// Every host process gone after stop().
void expect_gone(const std::vector<pid_t>& pids) {
  for (auto p : pids)
    EXPECT_FALSE(testing::process_runs(p)) << "pid " << p << " still runs";
}

TEST(scale, local_512_is_bit_identical_to_the_reference) {
  auto c = start(options("local-512", "tiny-512"));
  EXPECT_EQ(c.pids().size(), 8u);
  auto got = c.generate({1, 2, 3}, 4);
  expect_reference(got, reference("tiny-512", {0, {1, 2, 3}, 4, {}, 0}),
                   "local-512");
  auto pids = c.pids();
  EXPECT_FALSE(c.stop()) << "down left hosts behind";
  expect_gone(pids);
}

// The one longer test: 1500 chip actors in 12 processes, cold (fresh
// stores: weights generated, plan compiled). Each host holds its own share:
// its RSS stays within 2x of the SRAM arenas its chips run.
TEST(scale, local_1500_is_bit_identical_to_the_reference) {
  auto c = start(options("local-1500", "tiny-1500"));
  EXPECT_EQ(c.pids().size(), 12u);
  auto got = c.generate({5, 6}, 3);
  expect_reference(got, reference("tiny-1500", {0, {5, 6}, 3, {}, 0}),
                   "local-1500");
  auto st = c.status();
  ASSERT_TRUE(st) << render(st.error());
  EXPECT_GE((*st)["chips"].size(), 1400u); // 1489 of 1500 used
  // Memory: every host but the head (which also plans and samples) within
  // 2x of its chips' SRAM arenas.
  std::map<int, uint64_t> arena_bytes;
  for (const auto& chip : (*st)["chips"])
    arena_bytes[std::stoi(chip["chip"].get<std::string>().substr(1))] +=
        chip["sram_bytes"].get<uint64_t>();
  for (size_t rank = 1; rank < c.pids().size(); ++rank) {
    auto f = testing::figures_of(c.pids()[rank]);
    ASSERT_TRUE(f) << "host " << rank << " is gone";
    EXPECT_LE(f->rss_bytes, 2 * arena_bytes[static_cast<int>(rank)])
        << "host " << rank << ": RSS " << f->rss_bytes << " bytes, arenas "
        << arena_bytes[static_cast<int>(rank)];
  }
  auto pids = c.pids();
  EXPECT_FALSE(c.stop());
  expect_gone(pids);
}

// Paced mode at scale: local-512 in 2 ms slots (a step is 1979 slots, 4 s;
// zero misses would need slots so long that a token takes minutes: 0.8% of
// arrivals miss at 2 ms here, 0.06% at 5 ms). Late data is consumed, so the
// outputs are still the reference's, bit for bit.
TEST(scale, paced_local_512_is_bit_identical_to_the_reference) {
  auto o = options("local-512", "tiny-512");
  o.paced_slot_us = 2000;
  auto c = start(o);
  auto got = c.generate({1}, 2);
  expect_reference(got, reference("tiny-512", {0, {1}, 2, {}, 0}),
                   "paced local-512");
  std::this_thread::sleep_for(1500ms); // a heartbeat with the counters
  auto st = c.status();
  ASSERT_TRUE(st) << render(st.error());
  EXPECT_EQ((*st)["slot_mode"], "paced");
  EXPECT_EQ((*st)["slot_ns"], 2'000'000);
  uint64_t received = 0, misses = 0;
  for (const auto& l : (*st)["links"]) {
    received += l["transfers_received"].get<uint64_t>();
    misses += l["slot_misses"].get<uint64_t>();
  }
  EXPECT_GT(received, 0u);
  RecordProperty("slot_misses", std::to_string(misses));
  RecordProperty("transfers_received", std::to_string(received));
}

// Continuous batching on local-64, 2 batch slots: A runs long; B (sampled)
// and C (a different length and sampling) arrive while it decodes; C waits
// for a slot and joins when B leaves. Each equals its own reference run.
TEST(scale, late_requests_join_at_step_boundaries_and_equal_their_reference) {
  auto c = start(options("local-64", "tiny-64", 2, 128));
  model::generation_request a{0, {1, 2, 3}, 40, {}, 0};
  model::generation_request b{0, {9, 8}, 6, {7, 0.9f, 20, 0.95f}, 0};
  model::generation_request d{0, {4, 4, 4, 4, 4}, 10, {3, 0.7f, 0, 0.8f}, 0};
  caf::expected<actors::cluster_generation> got_a{caf::error{}},
      got_b{caf::error{}}, got_d{caf::error{}};
  std::thread ta{[&] { got_a = c.generate(a.prompt, a.max_tokens); }};
  std::this_thread::sleep_for(300ms); // A is decoding
  std::thread tb{
      [&] { got_b = c.generate(b.prompt, b.max_tokens, b.sampling); }};
  std::this_thread::sleep_for(50ms);
  std::thread td{
      [&] { got_d = c.generate(d.prompt, d.max_tokens, d.sampling); }};
  ta.join();
  tb.join();
  td.join();
  expect_reference(got_a, reference("tiny-64", a), "A");
  expect_reference(got_b, reference("tiny-64", b), "B");
  expect_reference(got_d, reference("tiny-64", d), "C");
  // Everything left its slot.
  auto st = c.status();
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["requests_active"], 0);
  EXPECT_EQ((*st)["requests_queued"], 0);
}

// --prefill interleave: a long prompt arriving while another request
// decodes goes through the prefill program in chunks alternating with A's
// decode steps (and rides those); both equal their reference runs, and the
// head ran exactly the chunks that takes: A's 3 tokens one, B's 100 tokens
// ceil(101 / (chunk + 1)) (each chunk and the decode step after it).
TEST(scale, a_long_prompt_is_prefilled_in_chunks_beside_a_decoding_request) {
  auto o = options("local-64", "tiny-64", 2, 256);
  o.extra_args = {"--prefill", "interleave"};
  auto c = start(o);
  model::generation_request a{0, {1, 2, 3}, 60, {}, 0};
  model::generation_request b{0, {}, 4, {5, 0.8f, 0, 0.9f}, 0};
  for (int i = 0; i < 100; ++i)
    b.prompt.push_back(i % 97 + 1);
  caf::expected<actors::cluster_generation> got_a{caf::error{}},
      got_b{caf::error{}};
  std::thread ta{[&] { got_a = c.generate(a.prompt, a.max_tokens); }};
  ASSERT_TRUE(wait_for_status(c, "requests_active", 1));
  std::this_thread::sleep_for(200ms); // A is decoding
  std::thread tb{
      [&] { got_b = c.generate(b.prompt, b.max_tokens, b.sampling); }};
  ta.join();
  tb.join();
  expect_reference(got_a, reference("tiny-64", a), "A");
  expect_reference(got_b, reference("tiny-64", b), "B");
  auto st = c.status();
  ASSERT_TRUE(st);
  ASSERT_EQ((*st)["prefill_program"], true);
  int chunk = (*st)["prefill_chunk_tokens"];
  ASSERT_GT(chunk, 1);
  EXPECT_EQ((*st)["prefill_policy"], "interleave");
  EXPECT_EQ((*st)["prefill_steps_run"], 1 + (101 + chunk) / (chunk + 1));
  // A's 59 tokens after its first, and B's 3, come from decode steps that
  // ran for both at once where they overlapped: at least A's 59.
  EXPECT_GE((*st)["decode_steps_run"], 59);
  EXPECT_EQ((*st)["steps_run"], (*st)["decode_steps_run"].get<int>() +
                                    (*st)["prefill_steps_run"].get<int>());
}

// One batch slot, room for one waiting request: a third is refused at once
// (`overloaded:`, exit 3) and the two admitted ones are unharmed. Then
// Ctrl-C of the running `generate` frees its slot for the queued request.
// The running request is long (1000 tokens, ~15 s on local-64) so that it
// is still running whatever the machine's load; it never has to finish.
TEST(scale, a_full_queue_refuses_with_overloaded_and_ctrl_c_frees_a_slot) {
  auto c = start(options("local-64", "tiny-64", 1, 0, 1));
  auto long_run = c.spawn_cli({"generate", "--prompt-tokens", "1,2",
                               "--max-tokens", "1000", "-o", "json"});
  ASSERT_TRUE(long_run);
  ASSERT_TRUE(wait_for_status(c, "requests_active", 1)) << "not admitted";
  auto queued = c.spawn_cli({"generate", "--prompt-tokens", "3",
                             "--max-tokens", "3", "-o", "json"});
  ASSERT_TRUE(queued);
  ASSERT_TRUE(wait_for_status(c, "requests_queued", 1)) << "not queued";
  auto t0 = std::chrono::steady_clock::now();
  auto refused = c.run_cli({"generate", "--prompt-tokens", "4",
                            "--max-tokens", "2"});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "not at once";
  EXPECT_EQ(refused.code, 3) << refused.err;
  EXPECT_EQ(refused.err.rfind("overloaded: ", 0), 0u) << refused.err;
  EXPECT_NE(refused.err.find("queue is full"), std::string::npos);

  // Ctrl-C: the long request ends with its client, and its slot goes to
  // the queued request at the next step boundary.
  long_run->signal(SIGINT);
  auto ended = long_run->wait(30s);
  ASSERT_TRUE(ended) << render(ended.error());
  EXPECT_NE(ended->code, 0) << "the long request ended before Ctrl-C";
  auto done = queued->wait(60s);
  ASSERT_TRUE(done) << render(done.error());
  ASSERT_EQ(done->code, 0) << done->err;
  auto j = nlohmann::json::parse(done->out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << done->out;
  auto want = reference("tiny-64", {0, {3}, 3, {}, 0});
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(j["logits_sha256"], want.logits_sha256);
  auto st = c.status();
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["requests_active"], 0);
  EXPECT_EQ((*st)["requests_queued"], 0);
}

} // namespace
} // namespace lockstep
