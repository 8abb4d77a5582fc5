// The critical path accounts for the whole predicted token latency, and
// its parts come from the profiles: link latency is the sum of each hop's
// link-profile latency.

#include "planner/critical_path.hpp"

#include "tests/planner/planner_fixture.hpp"

#include <cmath>

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
    EXPECT_NEAR(path.total_us(), r.p.predicted.token_latency_us, 1e-6) << model;
    EXPECT_NEAR(path.waiting_us, 0.0, 1e-9) << "list scheduling leaves no gaps";
    EXPECT_GT(path.compute_ops, r.p.spec.n_layers) << "every layer computes";
    // The path runs from micro-batch 0's feed on the sampler host to its
    // sample there: one host-link hop out (the row table to the first
    // chips) and one back (the logits; host endpoints never relay), every
    // other hop chip to chip. Count the hops by link profile from the
    // latency they add up to.
    double chip_us = 0;
    for (const auto& l : c.links)
      if (c.is_chip_link(l)) {
        chip_us = c.link_profiles[l.profile].latency_ns / 1000.0;
        break;
      }
    for (const auto& l : c.links) {
      if (c.is_chip_link(l)) {
        ASSERT_EQ(c.link_profiles[l.profile].latency_ns / 1000.0, chip_us)
            << config << ": the count below assumes one chip-link latency";
      }
    }
    double host_us = c.link_profiles[c.host_link].latency_ns / 1000.0;
    ASSERT_NE(host_us, chip_us) << config << ": hops indistinguishable";
    double host_hops =
        (path.link_latency_us - path.hops * chip_us) / (host_us - chip_us);
    EXPECT_NEAR(host_hops, std::round(host_hops), 1e-6) << model;
    EXPECT_EQ(std::lround(host_hops), 2) << model;
    EXPECT_NEAR(path.link_latency_us, (path.hops - 2) * chip_us + 2 * host_us,
                1e-6)
        << model;
    EXPECT_GT(path.hops, 2 * r.p.spec.n_layers) << "two reductions a layer";
  }
}

TEST(critical_path, empty_without_a_sample) {
  // Was `empty_without_a_logits_gather`: the path now ends at the sample.
  auto c = load("local-8");
  plan p;
  EXPECT_EQ(critical_path_of(p, c).ops, 0u);
  // A plan whose decode program lost its samples has no token to follow.
  auto r = make(c, "tiny-8");
  auto q = r.p;
  for (auto& o : q.decode.ops)
    if (o.kind == op_kind::sample)
      o.kind = op_kind::forward;
  EXPECT_EQ(critical_path_of(q, c).ops, 0u);
  EXPECT_GT(critical_path_of(r.p, c).ops, 0u);
}

} // namespace
} // namespace lockstep::planner
