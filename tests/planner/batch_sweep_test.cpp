// Many users per plan: the largest batch that fits (exact and estimated),
// and micro-batches that really pipeline through the layer groups, so the
// throughput a plan predicts is what its slot table does.

#include "planner/batch_sweep.hpp"
#include "tests/planner/planner_fixture.hpp"

namespace lockstep::planner {
namespace {

// The sweep's largest batch fits and one more does not; the estimate never
// says less than the exact answer.
TEST(batch_sweep, the_largest_batch_fits_and_one_more_does_not) {
  auto c = test::load("local-64");
  auto spec = *model::find_preset("tiny-64");
  plan_options o{1, 128, {}};
  auto sweep = sweep_batch(c, spec, o, 1, true);
  ASSERT_TRUE(sweep) << render(sweep.error());
  ASSERT_GT(sweep->max_batch, 1u);
  EXPECT_FALSE(sweep->at_limit);
  EXPECT_EQ(sweep->points.back().batch, sweep->max_batch);
  for (const auto& pt : sweep->points)
    EXPECT_TRUE(pt.result.verdict.ok()) << pt.batch;
  o.batch = sweep->max_batch + 1;
  auto over = make_plan(c, spec, o);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error(), errc::infeasible);
  EXPECT_GE(estimated_max_batch(c, spec, {1, 128, {}}), sweep->max_batch);
  // Probes (no points kept, not verified) find the same batch, from any
  // batch that fits.
  auto probe = sweep_batch(c, spec, {1, 128, {}}, 2, false);
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->max_batch, sweep->max_batch);
  EXPECT_TRUE(probe->points.empty());
}

// At batch B the step holds B micro-batches, one per group at a time: the
// step is far shorter than B tokens one after the other, and the plan's
// throughput is B tokens a step, as its slot table runs it.
TEST(batch_sweep, micro_batches_pipeline_through_the_groups) {
  auto c = test::load_shipped("groq-64");
  auto one = test::make(c, "llama-3-8b", {1, 2048, {}});
  auto four = test::make(c, "llama-3-8b", {4, 2048, {}});
  ASSERT_GT(four.p.decode.micro_batches, 1u);
  EXPECT_TRUE(four.verdict.ok()) << four.verdict.violations.front();
  double step_us = four.p.decode.slots_per_step * (four.p.slot_ns / 1000.0);
  EXPECT_LT(step_us, 0.6 * four.p.decode.micro_batches *
                         one.p.predicted.token_latency_us);
  EXPECT_NEAR(four.p.predicted.aggregate_tokens_per_s, 4 * 1e6 / step_us,
              1e-6 * four.p.predicted.aggregate_tokens_per_s);
  EXPECT_NEAR(four.p.predicted.tokens_per_s_per_user, 1e6 / step_us,
              1e-9 * four.p.predicted.tokens_per_s_per_user);
  EXPECT_GT(four.p.predicted.aggregate_tokens_per_s,
            2 * one.p.predicted.aggregate_tokens_per_s);
}

} // namespace
} // namespace lockstep::planner
