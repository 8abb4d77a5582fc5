// The cores a local cluster's chips share: an op waits for a free core as
// it waits for its chip, gaps are filled, and no more ops than cores ever
// overlap — also in the plans built for configs with a machine: section.

#include "planner/detail/core_timeline.hpp"

#include "tests/planner/planner_fixture.hpp"

#include <gtest/gtest.h>

#include <map>

namespace lockstep::planner {
namespace {

using detail::core_timeline;

TEST(core_timeline, zero_cores_means_no_limit) {
  core_timeline t{0};
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(t.book(7, 10), 7u);
}

TEST(core_timeline, ops_wait_for_a_free_core) {
  core_timeline t{2};
  EXPECT_EQ(t.book(0, 10), 0u);
  EXPECT_EQ(t.book(0, 10), 0u);  // the second core
  EXPECT_EQ(t.book(0, 10), 10u); // both busy until 10
  EXPECT_EQ(t.book(5, 3), 10u);
  EXPECT_EQ(t.book(30, 1), 30u); // ready later: at once
}

TEST(core_timeline, gaps_left_by_later_bookings_are_used) {
  core_timeline t{1};
  EXPECT_EQ(t.book(100, 10), 100u); // booked first, starts late
  EXPECT_EQ(t.book(0, 50), 0u);     // fits before it
  EXPECT_EQ(t.book(0, 60), 110u);   // does not fit in [50, 100)
  EXPECT_EQ(t.book(0, 50), 50u);    // exactly fills [50, 100)
  EXPECT_EQ(t.book(0, 1), 170u);
}

// Ops overlapping at each slot boundary where one starts, at most `cores`.
uint32_t most_ops_at_once(const step_program& prog) {
  std::map<uint32_t, int> delta;
  for (const auto& o : prog.ops) {
    delta[o.start_slot] += 1;
    delta[o.start_slot + o.duration_slots] -= 1;
  }
  int now = 0, most = 0;
  for (auto [slot, d] : delta)
    most = std::max(most, now += d);
  return static_cast<uint32_t>(most);
}

TEST(core_timeline, plans_on_a_shared_machine_never_run_more_ops_than_cores) {
  for (auto [name, model] : {std::pair{"local-8", "tiny-8"},
                             std::pair{"local-64", "tiny-64"}}) {
    auto shared = test::load_shipped(name);
    ASSERT_GT(shared.machine_cores, 0u) << name;
    for (uint32_t batch : {1u, 2u}) { // 2: micro-batches overlap
      auto r = test::make(shared, model, {batch, 128, {}});
      ASSERT_TRUE(r.verdict.ok()) << name << ": " << r.verdict.violations.front();
      for (auto kind : test::both_programs)
        EXPECT_LE(most_ops_at_once(r.p.program(kind)), shared.machine_cores)
            << name << " batch " << batch << " " << to_string(kind);
    }
  }
  // local-64 without the machine: its tensor-parallel groups compute side by
  // side, so the limit above is the model's doing, not the schedule's shape.
  auto alone = test::load_shipped("local-64");
  auto cores = alone.machine_cores;
  alone.machine_cores = 0;
  auto r = test::make(alone, "tiny-64", {1, 128, {}});
  EXPECT_GT(most_ops_at_once(r.p.decode), cores);
}

// A step cannot take less than the chips' work shared out over the cores.
TEST(core_timeline, predicted_throughput_respects_the_cores) {
  auto c = test::load_shipped("local-64");
  auto r = test::make(c, "tiny-64", {4, 256, {}});
  uint64_t work_slots = 0;
  for (const auto& o : r.p.decode.ops)
    work_slots += o.duration_slots;
  double min_period_us =
      double(work_slots) / c.machine_cores * r.p.slot_ns / 1000.0;
  EXPECT_LE(r.p.predicted.aggregate_tokens_per_s,
            r.p.batch * 1e6 / min_period_us * (1 + 1e-9));
  EXPECT_GE(r.p.predicted.token_latency_us,
            r.p.predicted.lower_bound_token_latency_us);
}

} // namespace
} // namespace lockstep::planner
