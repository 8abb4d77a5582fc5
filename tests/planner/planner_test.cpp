#include "planner/plan.capnp.h"
#include "planner/plan_cache.hpp"
#include "planner/plan_codec.hpp"
#include "planner/topology.hpp"
#include "planner/trace.hpp"
#include "tests/planner/planner_fixture.hpp"
#include "transport/payload_frame.hpp"

#include <capnp/serialize.h>
#include <nlohmann/json.hpp>

#include <cstring>

#include <filesystem>
#include <map>

namespace lockstep::planner {
namespace {

using test::load;
using test::make;

TEST(planner, tiny_8_on_local_8_is_verified_and_uses_tensor_parallel_splits) {
  auto c = load("local-8");
  auto r = make(c, "tiny-8");
  EXPECT_TRUE(r.verdict.ok()) << r.verdict.violations.front();
  EXPECT_GT(r.p.chips_used.size(), 1u);
  EXPECT_LE(r.p.chips_used.size(), 7u);
  size_t combines = 0;
  for (const auto& o : r.p.ops)
    combines += o.kind == op_kind::combine;
  // Two reductions per layer, combined on the root or (exchange) on every
  // chip of the group.
  if (r.p.tp_degree > 1) {
    EXPECT_TRUE(combines == 2u * 4 || combines == 2u * 4 * r.p.tp_degree)
        << combines;
  }
  EXPECT_GT(r.p.predicted.token_latency_us, 0);
  EXPECT_GE(r.p.predicted.token_latency_us,
            r.p.predicted.lower_bound_token_latency_us);
}

TEST(planner, tiny_n_needs_about_n_chips_of_local_n) {
  for (uint32_t n : {8u, 64u, 512u, 1500u}) {
    auto name = std::to_string(n);
    auto c = load("local-" + name);
    auto r = make(c, "tiny-" + name);
    EXPECT_TRUE(r.verdict.ok()) << name;
    EXPECT_GE(r.p.chips_used.size(), n * 7 / 10) << name;
    EXPECT_LE(r.p.chips_used.size(), n) << name;
    // The transport accepts the plan's slot table as it is.
    auto bytes = encode_plan(c, r.p);
    std::vector<::capnp::word> words(bytes.size() / 8);
    std::memcpy(words.data(), bytes.data(), bytes.size());
    ::capnp::FlatArrayMessageReader reader{
        kj::arrayPtr(words.data(), words.size())};
    auto program = transport::slot_program::compile(
        reader.getRoot<schema::Plan>().getSlotTable());
    EXPECT_TRUE(program) << name << ": " << render(program.error());
  }
}

TEST(planner, full_scale_presets_plan_and_verify_without_weights) {
  struct job {
    const char* config;
    const char* model;
  };
  for (auto j : {job{"groq-64", "llama-3-8b"}, job{"groq-576", "llama-2-70b"},
                 job{"groq-1512", "falcon-180b"}}) {
    auto c = load(j.config);
    auto r = make(c, j.model, {1, 2048, {}});
    EXPECT_TRUE(r.verdict.ok()) << j.model << " on " << j.config << ": "
                                << r.verdict.violations.front();
    // The bound never exceeds what a verified schedule achieves.
    EXPECT_GE(r.p.predicted.token_latency_us,
              r.p.predicted.lower_bound_token_latency_us);
  }
}

TEST(planner, same_inputs_give_byte_identical_plans) {
  auto c = load("groq-64");
  auto a = make(c, "llama-3-8b", {2, 1024, {}});
  auto b = make(c, "llama-3-8b", {2, 1024, {}});
  EXPECT_EQ(encode_plan(c, a.p), encode_plan(c, b.p));
  EXPECT_EQ(plan_hash(c, a.p), plan_hash(c, b.p));
  auto other = make(c, "llama-3-8b", {1, 1024, {}});
  EXPECT_NE(plan_hash(c, a.p), plan_hash(c, other.p));
}

TEST(planner, encoded_plan_carries_the_slot_table) {
  auto c = load("local-8");
  auto r = make(c, "tiny-8");
  auto bytes = encode_plan(c, r.p);
  auto hash = check_encoded_plan(bytes);
  ASSERT_TRUE(hash) << render(hash.error());
  EXPECT_EQ(*hash, plan_hash(c, r.p));
  EXPECT_FALSE(check_encoded_plan(bytes.substr(0, bytes.size() / 2)));
  EXPECT_FALSE(check_encoded_plan(std::string(64, '\xff')));
  EXPECT_FALSE(check_encoded_plan("abc"));
}

TEST(planner, decode_is_the_inverse_of_encode) {
  auto c = load("groq-64");
  auto r = make(c, "llama-3-8b", {1, 1024, {}});
  auto bytes = encode_plan(c, r.p);
  auto back = decode_plan(c, bytes);
  ASSERT_TRUE(back) << render(back.error());
  EXPECT_EQ(encode_plan(c, *back), bytes);
  EXPECT_TRUE(verify_plan(*back, c).ok());
  // Decoding against another cluster fails cleanly (its chips or links).
  auto other = load("local-8");
  EXPECT_FALSE(decode_plan(other, bytes));
}

TEST(planner, host_endpoints_round_trip_through_the_codec_and_verifier) {
  // No schedule sends to a host endpoint yet; a plan that does must still
  // encode, decode to the same bytes and verify without crashing.
  auto c = load("local-8");
  auto r = make(c, "tiny-8");
  auto p = r.p;
  uint32_t head = p.head_chips[0];
  uint32_t host = c.host_node(c.ref(head).host);
  topology t{c};
  auto link = t.find(head, host);
  ASSERT_GE(link, 0);
  uint32_t gather = no_id;
  for (const auto& o : p.ops)
    if (o.chip == head && o.kind == op_kind::gather)
      gather = o.id;
  ASSERT_NE(gather, no_id);
  transfer x;
  x.id = static_cast<uint32_t>(p.transfers.size());
  x.link = static_cast<uint32_t>(link);
  x.src = head;
  x.dst = host;
  x.payload_bytes = 64;
  x.bytes = transport::framed_bytes(64);
  x.start_slot = p.ops[gather].start_slot + p.ops[gather].duration_slots;
  x.src_offset = p.usage[head].send_arena_bytes;
  x.dst_offsets = {0, (x.bytes + 7) / 8 * 8};
  x.after_op = gather;
  p.usage[head].send_arena_bytes += (x.bytes + 7) / 8 * 8;
  p.transfers.push_back(x);
  auto bytes = encode_plan(c, p);
  auto back = decode_plan(c, bytes);
  ASSERT_TRUE(back) << render(back.error());
  EXPECT_EQ(encode_plan(c, *back), bytes);
  EXPECT_EQ(back->transfers.back().dst, host);
  EXPECT_EQ(back->transfers.back().link, x.link);
  // Nothing on the host reads it yet, and the verifier says so by name.
  auto v = verify_plan(*back, c);
  ASSERT_FALSE(v.ok());
  bool named = false;
  for (const auto& what : v.violations)
    named |= what.find("h0.c") != std::string::npos &&
             what.find("->h0.host") != std::string::npos &&
             what.find("nobody reads it") != std::string::npos;
  EXPECT_TRUE(named) << v.violations.front();
  // Work runs on chips only: an op on a host endpoint is named as such,
  // and decoding one fails cleanly (arrays sized by chips are not indexed).
  auto q = *back;
  q.ops.front().chip = host;
  auto w = verify_plan(q, c);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.violations.front().find("on h0.host"), std::string::npos)
      << w.violations.front();
  EXPECT_NE(w.violations.front().find("a host endpoint, not a chip"),
            std::string::npos)
      << w.violations.front();
  auto bad = decode_plan(c, encode_plan(c, q));
  ASSERT_FALSE(bad);
  EXPECT_NE(render(bad.error()).find("h0.host is a host endpoint, not a chip"),
            std::string::npos)
      << render(bad.error());
}

TEST(planner, plan_cache_round_trips_through_rocksdb) {
  char dir[] = "/tmp/lockstep-plan-cache-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::filesystem::path path = std::string{dir} + "/db";
  {
    auto db = storage::store::open(path, {.create_if_missing = true});
    ASSERT_TRUE(db) << render(db.error());
    plan_cache cache{**db};
    auto c = load("local-8");
    auto r = make(c, "tiny-8");
    auto hash = plan_hash(c, r.p);
    EXPECT_FALSE(*cache.get(c, hash)); // empty
    ASSERT_FALSE(cache.put(c, r.p));
    auto hit = cache.get(c, hash);
    ASSERT_TRUE(hit && *hit);
    EXPECT_EQ(encode_plan(c, **hit), encode_plan(c, r.p));
    EXPECT_EQ(hash, input_hash(c, r.p.spec, 1, r.p.spec.max_context, {}));
    // A corrupt entry is an error, not a plan.
    ASSERT_FALSE((*db)->put(storage::column::plans, "plan/" + hash, "junk!!!"));
    EXPECT_FALSE(cache.get(c, hash));
  }
  std::filesystem::remove_all(dir);
}

TEST(planner, replan_moves_only_the_failed_chips_work_onto_a_spare) {
  auto c = load("groq-576");
  auto base = make(c, "llama-2-70b", {1, 2048, {}});
  ASSERT_TRUE(base.verdict.ok());
  uint32_t failed = base.p.group_chips[5];
  auto r = replan(c, base.p, failed);
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_TRUE(r->result.verdict.ok()) << r->result.verdict.violations.front();
  EXPECT_NE(r->replacement, failed);
  EXPECT_TRUE(
      std::binary_search(c.spares.begin(), c.spares.end(), r->replacement));
  EXPECT_GT(r->moved_shards, 0u);
  // Every shard stays where it was, except the failed chip's.
  ASSERT_EQ(r->result.p.shards.size(), base.p.shards.size());
  size_t moved = 0;
  for (size_t i = 0; i < base.p.shards.size(); ++i) {
    const auto& before = base.p.shards[i];
    const auto& after = r->result.p.shards[i];
    EXPECT_EQ(before.range, after.range);
    if (before.chip == failed) {
      EXPECT_EQ(after.chip, r->replacement);
      ++moved;
    } else {
      EXPECT_EQ(after.chip, before.chip);
    }
  }
  EXPECT_EQ(moved, r->moved_shards);
  for (const auto& o : r->result.p.ops)
    EXPECT_NE(o.chip, failed);
  // A chip the plan does not use fails: nothing moves.
  auto idle = replan(c, base.p, c.spares.back());
  ASSERT_TRUE(idle);
  EXPECT_EQ(idle->moved_shards, 0u);
  EXPECT_TRUE(idle->result.verdict.ok());
}

TEST(planner, infeasible_and_bad_options_are_clear_errors) {
  auto c = load("local-8");
  auto big = make_plan(c, *model::find_preset("llama-2-70b"), {});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error(), errc::infeasible);
  EXPECT_NE(render(big.error()).find("does not fit cluster local-8"),
            std::string::npos);
  EXPECT_FALSE(make_plan(c, *model::find_preset("tiny-8"), {0, 0, {}}));
  EXPECT_FALSE(make_plan(c, *model::find_preset("tiny-8"), {1, 100000, {}}));
  EXPECT_FALSE(make_plan(c, *model::find_preset("tiny-8"), {1, 0, {99}}));
}

TEST(planner, trace_has_a_track_per_chip_and_link) {
  auto c = load("local-8");
  auto r = make(c, "tiny-8");
  auto j = nlohmann::json::parse(chrome_trace(c, r.p));
  std::map<int, size_t> per_pid;
  for (const auto& e : j["traceEvents"])
    if (e["ph"] == "X")
      ++per_pid[e["pid"].get<int>()];
  EXPECT_EQ(per_pid[1], r.p.ops.size());
  EXPECT_EQ(per_pid[2], r.p.transfers.size());
}

} // namespace
} // namespace lockstep::planner
