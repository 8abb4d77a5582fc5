// The acceptance of executable plans: every chip of a plan run in one
// process (actors/simulation.hpp) gives the reference engine's tokens and
// logits bit for bit — weights from a real RocksDB store, the plan from the
// planner — and proofs that the simulation runs the plan, not the
// reference by another door.

#include "actors/simulation.hpp"
#include "model/generation.hpp"
#include "planner/planner.hpp"
#include "storage/store.hpp"
#include "storage/weight_store.hpp"
#include "tests/storage/temp_dir.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace lockstep::actors {
namespace {

// A RocksDB weight store for one model (seed 42), its reference results
// and plans for a config.
class store_fixture {
public:
  explicit store_fixture(const std::string& model,
                         model::dtype type = model::dtype::f32) {
    auto spec = *model::find_preset(model);
    spec.weight_dtype = type;
    auto db = storage::store::open(dir_ / "db", {.create_if_missing = true});
    EXPECT_TRUE(db) << render(db.error());
    db_ = std::move(*db);
    auto init = storage::init_weights(*db_, spec, 42);
    EXPECT_TRUE(init) << render(init.error());
    auto ws = storage::weight_store::open(*db_);
    EXPECT_TRUE(ws) << render(ws.error());
    ws_.emplace(std::move(*ws));
  }

  const storage::weight_store& weights() const { return *ws_; }
  const model::model_spec& spec() const { return ws_->spec(); }

  std::vector<model::generation_result>
  reference(std::vector<model::generation_request> reqs) const {
    auto w = model::model_weights::load(
        spec(), [&](model::tensor_id id) { return ws_->read(id); });
    EXPECT_TRUE(w);
    model::reference_engine engine{*w, 2};
    auto out = model::generate(engine, reqs);
    EXPECT_TRUE(out) << render(out.error());
    return std::move(*out);
  }

private:
  test::temp_dir dir_;
  std::unique_ptr<storage::store> db_;
  std::optional<storage::weight_store> ws_;
};

planner::cluster_config config_of(const std::string& name) {
  auto c = planner::load_cluster_config(std::string{LOCKSTEP_SOURCE_DIR} +
                                        "/cluster_configs/" + name + ".yaml");
  EXPECT_TRUE(c) << render(c.error());
  return std::move(*c);
}

planner::plan plan_of(const planner::cluster_config& c,
                      const model::model_spec& spec, uint32_t batch = 1,
                      uint32_t context = 0) {
  auto r = planner::make_plan(c, spec, {batch, context, {}});
  EXPECT_TRUE(r) << render(r.error());
  EXPECT_TRUE(r->verdict.ok()) << r->verdict.violations.front();
  return std::move(r->p);
}

model::generation_request greedy(uint64_t id, std::vector<int32_t> prompt,
                                 uint32_t n) {
  return {id, std::move(prompt), n, {}, 0};
}

// Runs `reqs` on the plan and compares every request with its reference
// run; also checks the counts are the plan's own.
void expect_reference_bits(const store_fixture& store,
                           const planner::cluster_config& c,
                           const planner::plan& p,
                           const std::vector<model::generation_request>& reqs) {
  auto sim = simulation::load(p, c, store.weights());
  ASSERT_TRUE(sim) << render(sim.error());
  auto report = (*sim)->generate(reqs);
  ASSERT_TRUE(report) << render(report.error());
  auto expected = store.reference(reqs);
  ASSERT_EQ(report->requests.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(report->requests[i].tokens, expected[i].tokens) << "request " << i;
    EXPECT_EQ(report->requests[i].logits_sha256, expected[i].logits_sha256)
        << "request " << i;
  }
  // Exactly what the plan lists, step by step.
  EXPECT_EQ(report->ops_executed,
            report->prefill_steps * p.prefill.ops.size() +
                report->decode_steps * p.decode.ops.size());
  EXPECT_EQ(report->bytes_transferred,
            report->prefill_steps * p.prefill.transfer_bytes() +
                report->decode_steps * p.decode.transfer_bytes());
  uint32_t longest = 0;
  for (const auto& r : reqs)
    longest = std::max(longest, r.max_tokens);
  EXPECT_EQ(report->decode_steps, longest - 1);
}

TEST(simulation, tiny_8_on_local_8_f32_and_int8) {
  for (auto type : {model::dtype::f32, model::dtype::int8}) {
    store_fixture store{"tiny-8", type};
    auto c = config_of("local-8");
    auto p = plan_of(c, store.spec());
    // A prompt longer than one prefill chunk, so chunks pipeline.
    std::vector<int32_t> prompt;
    for (int32_t i = 0; i < 3 * static_cast<int32_t>(p.prefill.tokens) + 5; ++i)
      prompt.push_back((i * 37 + 11) % 1024);
    expect_reference_bits(store, c, p, {greedy(0, prompt, 12)});
    expect_reference_bits(store, c, p, {greedy(0, {1, 2, 3}, 12)});
  }
}

TEST(simulation, tiny_64_on_local_64_greedy_sampled_and_after_a_failure) {
  store_fixture store{"tiny-64"};
  auto c = config_of("local-64");
  auto p = plan_of(c, store.spec());
  expect_reference_bits(store, c, p, {greedy(0, {1, 2, 3}, 8)});
  // Seeded sampling: temperature, top-k and top-p.
  expect_reference_bits(store, c, p,
                        {{0, {7, 7, 7, 1}, 8, {7, 0.8f, 40, 0.95f}, 0}});
  // Re-planned around a failed chip of the first group.
  auto moved = planner::replan(c, p, p.group_chips[1]);
  ASSERT_TRUE(moved) << render(moved.error());
  ASSERT_TRUE(moved->result.verdict.ok());
  EXPECT_NE(moved->replacement, moved->failed);
  expect_reference_bits(store, c, moved->result.p, {greedy(0, {1, 2, 3}, 8)});
}

TEST(simulation, three_prompts_at_once_on_local_64_each_equal_to_its_own_run) {
  store_fixture store{"tiny-64"};
  auto c = config_of("local-64");
  // As chips with cores of their own: the planner then pipelines the batch
  // in micro-batches (on local-64's 2 shared cores one pass is faster),
  // which is what this test runs.
  c.machine_cores = 0;
  auto p = plan_of(c, store.spec(), 3, 256);
  EXPECT_EQ(p.decode.micro_batches, 3u);
  std::vector<model::generation_request> reqs{
      {0, {1, 2, 3}, 6, {11, 0.9f, 0, 1.0f}, 0},
      {1, {5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 9, {}, 0},
      {2, {100}, 4, {3, 1.2f, 50, 0.9f}, 0}};
  auto sim = simulation::load(p, c, store.weights());
  ASSERT_TRUE(sim) << render(sim.error());
  auto report = (*sim)->generate(reqs);
  ASSERT_TRUE(report) << render(report.error());
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto alone = store.reference({reqs[i]});
    EXPECT_EQ(report->requests[i].tokens, alone[0].tokens) << i;
    EXPECT_EQ(report->requests[i].logits_sha256, alone[0].logits_sha256) << i;
  }
  // The same simulation serves a second generation from a clean start.
  auto again = (*sim)->generate(std::vector{reqs[1]});
  ASSERT_TRUE(again) << render(again.error());
  EXPECT_EQ(again->requests[0].logits_sha256,
            report->requests[1].logits_sha256);
}

TEST(simulation, tiny_512_on_local_512) {
  store_fixture store{"tiny-512"};
  auto c = config_of("local-512");
  expect_reference_bits(store, c, plan_of(c, store.spec()),
                        {greedy(0, {1, 2, 3}, 6)});
}

TEST(simulation, tiny_1500_on_local_1500) {
  store_fixture store{"tiny-1500"};
  auto c = config_of("local-1500");
  expect_reference_bits(store, c, plan_of(c, store.spec()),
                        {greedy(0, {1, 2, 3}, 6)});
}

// --- Proofs that the plan is what runs --------------------------------------

class simulation_proofs : public ::testing::Test {
protected:
  simulation_proofs()
      : store_("tiny-64")
      , c_(config_of("local-64"))
      , p_(plan_of(c_, store_.spec())) {}

  caf::expected<simulation_report> run(const planner::plan& p,
                                       simulation_options o = {},
                                       std::function<void(simulation&)> before =
                                           {}) {
    auto sim = simulation::load(p, c_, store_.weights(), o);
    if (!sim)
      return sim.error();
    if (before)
      before(**sim);
    return (*sim)->generate(std::vector{greedy(0, {1, 2, 3}, 4)});
  }

  store_fixture store_;
  planner::cluster_config c_;
  planner::plan p_;
};

TEST_F(simulation_proofs, zeroing_one_weight_tile_in_one_arena_changes_the_logits) {
  auto good = run(p_);
  ASSERT_TRUE(good) << render(good.error());
  // The first 64x64 tile of a layer-5 w_gate shard, in its chip's SRAM.
  auto it = std::find_if(p_.shards.begin(), p_.shards.end(), [](auto& s) {
    return s.tensor.layer == 5 && s.tensor.kind == model::tensor_kind::w_gate;
  });
  ASSERT_NE(it, p_.shards.end());
  auto bad = run(p_, {}, [&](simulation& sim) {
    auto sram = sim.sram(it->chip);
    size_t row_bytes = size_t{it->range.cols()} * 4;
    for (uint32_t r = 0; r < 64; ++r)
      std::memset(sram.data() + it->offset + r * row_bytes, 0, 64 * 4);
  });
  ASSERT_TRUE(bad) << render(bad.error());
  EXPECT_NE(bad->requests[0].logits_sha256, good->requests[0].logits_sha256);
}

TEST_F(simulation_proofs, dropping_one_transfer_fails_naming_chip_op_and_slot) {
  // A transfer in the middle of the step, read by a combine.
  const auto* pick = &p_.decode.transfers[p_.decode.transfers.size() / 2];
  for (const auto& t : p_.decode.transfers)
    if (p_.decode.ops[t.consumer_op].kind == planner::op_kind::combine &&
        t.id >= p_.decode.transfers.size() / 2) {
      pick = &t;
      break;
    }
  const auto& reader = p_.decode.ops[pick->consumer_op];
  auto r = run(p_, {.drop_decode_transfer = pick->id});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::missing_input);
  auto what = detail_of(r.error());
  EXPECT_NE(what.find("chip " + transport::to_string(c_.ref(reader.chip))),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("op " + std::to_string(reader.id)), std::string::npos)
      << what;
  EXPECT_NE(what.find("slot " + std::to_string(reader.start_slot)),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("transfer " + std::to_string(pick->id)),
            std::string::npos)
      << what;
}

TEST_F(simulation_proofs, shifting_one_input_offset_fails_naming_chip_op_and_slot) {
  auto p = p_;
  auto it = std::find_if(p.decode.ops.begin(), p.decode.ops.end(), [](auto& o) {
    return o.kind == planner::op_kind::mlp && o.layer == 3;
  });
  ASSERT_NE(it, p.decode.ops.end());
  it->inputs[0].offset += 64;
  auto r = run(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::bad_program);
  auto what = detail_of(r.error());
  EXPECT_NE(what.find("chip " + transport::to_string(c_.ref(it->chip))),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("op " + std::to_string(it->id)), std::string::npos)
      << what;
  EXPECT_NE(what.find("slot " + std::to_string(it->start_slot)),
            std::string::npos)
      << what;
}

TEST_F(simulation_proofs, a_transfer_before_its_producer_sends_nothing_stale) {
  // Move a late transfer to slot 0: its send window holds nothing of this
  // step yet, and copying it anyway would deliver stale bytes.
  auto p = p_;
  auto& t = p.decode.transfers.back();
  const auto& producer = p.decode.ops[t.after_op];
  ASSERT_GT(t.start_slot, 0u);
  t.start_slot = 0;
  auto r = run(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::missing_input);
  auto what = detail_of(r.error());
  EXPECT_NE(what.find("op " + std::to_string(producer.id)), std::string::npos)
      << what;
  EXPECT_NE(what.find("transfer " + std::to_string(t.id)), std::string::npos)
      << what;
}

TEST_F(simulation_proofs, requests_the_plan_cannot_serve_are_refused) {
  auto sim = simulation::load(p_, c_, store_.weights());
  ASSERT_TRUE(sim);
  auto two = (*sim)->generate(
      std::vector{greedy(0, {1}, 2), greedy(1, {2}, 2)}); // plan: batch 1
  ASSERT_FALSE(two);
  EXPECT_EQ(two.error(), errc::bad_request);
  auto too_long = (*sim)->generate(
      std::vector{greedy(0, std::vector<int32_t>(p_.context, 1), 2)});
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error(), errc::bad_request);
  auto bad_token = (*sim)->generate(std::vector{greedy(0, {999999}, 2)});
  ASSERT_FALSE(bad_token);
}

TEST(simulation_memory, a_config_beyond_this_machine_is_refused_naming_both) {
  auto err = check_simulation_memory(config_of("groq-576"));
  ASSERT_TRUE(err);
  EXPECT_EQ(err, errc::too_large);
  EXPECT_EQ(lockstep::kind_of(err), error_kind::invalid_input);
  EXPECT_NE(detail_of(err).find("132.5 GB"), std::string::npos)
      << detail_of(err);
  EXPECT_NE(detail_of(err).find("available"), std::string::npos);
  EXPECT_FALSE(check_simulation_memory(config_of("local-1500")));
}

} // namespace
} // namespace lockstep::actors
