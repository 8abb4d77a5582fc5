// The critical path accounts for the whole predicted token latency, and
// its parts come from the profiles: link latency is hops x latency.

#include "planner/critical_path.hpp"

#include "tests/planner/planner_fixture.hpp"

namespace lockstep::planner {
namespace {

using test::load;
using test::make;

TEST(critical_path, sums_to_the_predicted_token_latency) {
  for (auto [config, model] : {std::pair{"local-64", "tiny-64"},
                               std::pair{"groq-576", "llama-2-70b"}}) {
    auto c = load(config);
    auto r = make(c, model);
    ASSERT_TRUE(r.verdict.ok()) << model;
    auto path = critical_path_of(r.p, c);
    EXPECT_NEAR(path.total_us(), r.p.predicted.token_latency_us, 1e-6)
        << model;
    EXPECT_NEAR(path.waiting_us, 0.0, 1e-9) << "list scheduling leaves no gaps";
    EXPECT_GT(path.compute_ops, r.p.spec.n_layers) << "every layer computes";
    // Every hop is chip to chip: the profile of the first (chip) link.
    double latency_us =
        c.link_profiles[c.links.front().profile].latency_ns / 1000.0;
    EXPECT_NEAR(path.link_latency_us, path.hops * latency_us, 1e-6) << model;
    EXPECT_GT(path.hops, 2 * r.p.spec.n_layers) << "two reductions a layer";
  }
}

TEST(critical_path, empty_without_a_logits_gather) {
  auto c = load("local-8");
  plan p;
  EXPECT_EQ(critical_path_of(p, c).ops, 0u);
}

} // namespace
} // namespace lockstep::planner
