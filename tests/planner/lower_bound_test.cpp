// The token-latency lower bound: no placement beats it (an exhaustive
// search on small clusters), its terms move as the argument says, and
// every shipped pair's plan stays above it (planner_test.cpp checks those
// at batch 1; here at other batches, contexts and after a re-plan).

#include "planner/detail/plan_placement.hpp"
#include "planner/lower_bound.hpp"
#include "tests/planner/planner_fixture.hpp"

#include <algorithm>
#include <numeric>

namespace lockstep::planner {
namespace {

// Six chips as two nodes of three, joined chip i to chip i (chips of
// different nodes and index are 2 hops apart); SRAM makes a layer of the
// 2-layer model below need 2 chips at least.
std::string two_nodes(const std::string& sram, const std::string& machine) {
  return machine + R"(name: two-nodes
chip_profile:
  name: c
  sram_bytes: )" + sram + R"(
  flops: {f32: 2e10, f16: 2e10, int8: 2e10}
  sram_bytes_per_s: 1e10
  c2c_ports: 16
  op_overhead_ns: 2000
link_profiles:
  near: {bytes_per_s: 1e10, latency_ns: 3000}
  far: {bytes_per_s: 5e9, latency_ns: 9000}
  host: {bytes_per_s: 4e10, latency_ns: 10}
topology:
  kind: explicit
  hosts: 2
  chips_per_host: 3
  host_link: host
  links:
    - {pattern: intra_host_full_mesh, profile: near}
    - {pattern: inter_host_same_index, profile: far}
transport:
  provider: shm
  slot_mode: logical
  slot_us: 1
)";
}

cluster_config parse(const std::string& yaml) {
  auto c = parse_cluster_config(yaml, "two-nodes.yaml");
  if (!c)
    throw std::runtime_error(render(c.error()));
  return std::move(*c);
}

// tiny-8 cut to two layers: a 3.1 MB f32 layer, 1 MB embedding and head.
model::model_spec two_layers() {
  auto s = *model::find_preset("tiny-8");
  s.name = "tiny-2-layers";
  s.n_layers = 2;
  return s;
}

struct search_result {
  size_t built = 0, fit = 0;
  double best_us = 0;
  std::string best;
};

// Every placement the planner can express on `c`: each candidate shape
// (tensor-parallel degree, split style, layers per group, embedding and
// head slices) with its chips in every order of the available chips.
search_result search(const char* name, const cluster_config& c,
                     const model::model_spec& spec, plan_options o,
                     double bound_us) {
  std::vector<uint32_t> chips(c.chip_count());
  std::iota(chips.begin(), chips.end(), 0u);
  topology topo{c};
  auto shapes =
      detail::place_candidates(spec, c, topo, o.batch, o.context, chips);
  if (!shapes)
    throw std::runtime_error(render(shapes.error()));
  search_result out;
  auto order = chips;
  do {
    for (auto pl : *shapes) {
      auto remap = [&](std::vector<uint32_t>& v) {
        for (auto& x : v)
          x = order[x];
      };
      for (auto& g : pl.groups)
        remap(g);
      remap(pl.embed_chips);
      remap(pl.head_chips);
      auto r = detail::plan_placement(c, spec, o, pl);
      if (!r)
        throw std::runtime_error(render(r.error()));
      ++out.built;
      if (!r->fits)
        continue;
      ++out.fit;
      // The property itself, placement by placement.
      EXPECT_GE(r->token_latency_us, bound_us)
          << "k=" << pl.tp_degree << " layers/group=" << pl.layers_per_group
          << " aligned=" << pl.aligned_splits << " first chip "
          << pl.groups[0][0];
      if (out.fit == 1 || r->token_latency_us < out.best_us) {
        out.best_us = r->token_latency_us;
        out.best = "k=" + std::to_string(pl.tp_degree) + " on chips " +
                   std::to_string(pl.groups[0][0]) + "...";
      }
    }
  } while (std::next_permutation(order.begin(), order.end()));
  std::printf("%s: %zu placements, %zu fit; best %.1f us (%s), bound %.1f "
              "us, ratio %.3f\n",
              name, out.built, out.fit, out.best_us, out.best.c_str(),
              bound_us, out.best_us / bound_us);
  return out;
}

TEST(lower_bound, no_placement_on_two_nodes_beats_it) {
  auto c = parse(two_nodes("2.6e6", ""));
  auto spec = two_layers();
  plan_options o{1, 128, {}};
  auto b = token_latency_bound(c, spec, o.batch, o.context, {});
  EXPECT_EQ(b.min_tp_degree, 2u);
  EXPECT_EQ(b.clique, 3u);
  auto r = search("two nodes", c, spec, o, b.total_us);
  EXPECT_EQ(r.built % 720, 0u);
  EXPECT_GT(r.fit, 0u);
  EXPECT_GE(r.best_us, b.total_us) << r.best;
  RecordProperty("best_over_bound", std::to_string(r.best_us / b.total_us));
}

// The same on a machine whose chips share 1 core: ops queue for it, and the
// bound charges the sum of a layer's ops over the cores.
TEST(lower_bound, no_placement_on_a_shared_machine_beats_it) {
  auto c = parse(two_nodes("2.6e6", "machine:\n  cores: 1\n"));
  auto spec = two_layers();
  plan_options o{2, 64, {}};
  auto b = token_latency_bound(c, spec, o.batch, o.context, {});
  EXPECT_GT(b.shared_work_us, 0);
  EXPECT_GT(search("shared machine", c, spec, o, b.total_us).fit, 0u);
}

// Layers that fit a chip: the bound's cheapest way keeps them whole, and
// the search over placements still never beats it.
TEST(lower_bound, whole_layers_on_a_chip_are_bounded_too) {
  auto c = parse(two_nodes("8e6", ""));
  auto spec = two_layers();
  plan_options o{1, 64, {}};
  auto b = token_latency_bound(c, spec, o.batch, o.context, {});
  EXPECT_EQ(b.min_tp_degree, 1u);
  EXPECT_GT(search("whole layers", c, spec, o, b.total_us).fit, 0u);
}

// Four nodes of three chips: a power-of-two group wider than a node cannot
// take whole nodes, so the planner keeps groups inside nodes (it crashed
// building a 4-chip group over nodes of 3). The plan verifies and stays
// above the bound.
TEST(lower_bound, nodes_of_three_chips_plan_verified_above_it) {
  auto yaml = two_nodes("2.6e6", "");
  yaml.replace(yaml.find("hosts: 2"), 8, "hosts: 4");
  auto c = parse(yaml);
  auto r = test::make(c, "tiny-8", {1, 128, {}});
  EXPECT_TRUE(r.verdict.ok()) << r.verdict.violations.front();
  EXPECT_LE(r.p.tp_degree, 3u);
  EXPECT_GE(r.p.predicted.token_latency_us,
            r.p.predicted.lower_bound_token_latency_us);
}

// SRAM forces the degree; a farther topology (a chip's group spans hops)
// raises the bound; so does a slower link; more context means more KV.
TEST(lower_bound, its_terms_follow_sram_topology_and_links) {
  auto spec = two_layers();
  auto tight = parse(two_nodes("2.6e6", ""));
  auto roomy = parse(two_nodes("8e6", ""));
  auto bt = token_latency_bound(tight, spec, 1, 128, {});
  auto br = token_latency_bound(roomy, spec, 1, 128, {});
  EXPECT_EQ(bt.min_tp_degree, 2u);
  EXPECT_EQ(br.min_tp_degree, 1u);
  EXPECT_GE(bt.total_us, br.total_us);
  // Batch: SRAM holds every sequence's KV, so a large batch forces more
  // chips per layer.
  auto big = token_latency_bound(tight, spec, 64, 512, {});
  EXPECT_GT(big.min_tp_degree, bt.min_tp_degree);
  // Losing chip 0 of each node leaves cliques of 2: a layer on 3 chips
  // now spans 2 hops.
  auto b3 = token_latency_bound(tight, spec, 1, 128, {});
  auto lost = token_latency_bound(tight, spec, 1, 128, {0, 3});
  EXPECT_EQ(lost.clique, 2u);
  EXPECT_GE(lost.total_us, b3.total_us);
  // Slower links, higher bound.
  auto slow_yaml = two_nodes("2.6e6", "");
  slow_yaml.replace(slow_yaml.find("latency_ns: 3000"), 16,
                    "latency_ns: 6000");
  auto slow = token_latency_bound(parse(slow_yaml), spec, 1, 128, {});
  EXPECT_GT(slow.total_us, bt.total_us);
  EXPECT_GT(slow.terms.link_latency_us, bt.terms.link_latency_us);
  // The terms add up to the chain.
  EXPECT_NEAR(bt.terms.total_us(), bt.chain_us, 1e-6);
}

// Plans of shipped pairs at other batches and contexts, and after a
// re-plan around a failed chip, stay above the bound of their own inputs.
TEST(lower_bound, shipped_plans_at_other_batches_and_after_a_replan_stay_above)
{
  struct run {
    const char* config;
    const char* model;
    plan_options o;
  };
  for (const auto& x : {run{"local-8", "tiny-8", {2, 128, {}}},
                        run{"local-64", "tiny-64", {16, 128, {}}},
                        run{"groq-64", "llama-3-8b", {4, 4096, {}}},
                        run{"groq-576", "llama-2-70b", {2, 4096, {}}}}) {
    auto c = test::load_shipped(x.config);
    auto r = test::make(c, x.model, x.o);
    std::string name = std::string{x.model} + " on " + x.config;
    EXPECT_GE(r.p.predicted.token_latency_us,
              r.p.predicted.lower_bound_token_latency_us)
        << name;
    EXPECT_DOUBLE_EQ(r.p.predicted.lower_bound_token_latency_us,
                     token_latency_bound(c, r.p).total_us)
        << name;
    auto failed = r.p.group_chips.front();
    auto re = replan(c, r.p, failed);
    if (!re) {
      // A spare that cannot take the chip's work (SRAM near full) is an
      // answer too, but only that one.
      EXPECT_EQ(re.error(), errc::infeasible) << name;
      continue;
    }
    const auto& q = re->result.p;
    EXPECT_GE(q.predicted.token_latency_us,
              q.predicted.lower_bound_token_latency_us)
        << name << " after " << failed << " failed";
  }
}

} // namespace
} // namespace lockstep::planner
