// How close k chips can be: cliques, balls and the diameters they bound,
// on graphs whose answers are known by hand.

#include "planner/detail/chip_reach.hpp"
#include "tests/planner/planner_fixture.hpp"

namespace lockstep::planner::detail {
namespace {

cluster_config parse(const std::string& topology) {
  auto c = parse_cluster_config(R"(name: reach
chip_profile:
  name: c
  sram_bytes: 1e6
  flops: {f32: 1e9, f16: 1e9, int8: 1e9}
  sram_bytes_per_s: 1e9
  c2c_ports: 16
  op_overhead_ns: 10
link_profiles:
  fast: {bytes_per_s: 1e9, latency_ns: 100}
  host: {bytes_per_s: 1e9, latency_ns: 10}
topology:
)" + topology + R"(
transport:
  provider: shm
  slot_mode: logical
  slot_us: 1
)",
                                "reach.yaml");
  if (!c)
    throw std::runtime_error(render(c.error()));
  return std::move(*c);
}

std::vector<bool> all_usable(const cluster_config& c) {
  return std::vector<bool>(c.chip_count(), true);
}

// Two nodes of three (full meshes) joined chip i to chip i: every chip has
// 3 neighbours, all 6 chips are within 2 hops of each, the largest clique
// is a node.
TEST(chip_reach, two_triangles_joined_by_same_index_links) {
  auto c = parse(R"(  kind: explicit
  hosts: 2
  chips_per_host: 3
  host_link: host
  links:
    - {pattern: intra_host_full_mesh, profile: fast}
    - {pattern: inter_host_same_index, profile: fast})");
  chip_reach r{c, all_usable(c)};
  EXPECT_EQ(r.chips(), 6u);
  EXPECT_EQ(r.clique(), 3u);
  EXPECT_EQ(r.max_degree(), 3u);
  EXPECT_EQ(r.max_parallel_links(), 1u);
  EXPECT_EQ(r.min_reach(1), 0u);
  EXPECT_EQ(r.min_reach(4), 1u); // a chip and its 3 neighbours
  EXPECT_EQ(r.min_reach(5), 2u);
  EXPECT_EQ(r.min_reach(6), 2u);
  EXPECT_EQ(r.min_diameter(1), 0u);
  EXPECT_EQ(r.min_diameter(3), 1u);
  EXPECT_EQ(r.min_diameter(4), 2u); // no 4-clique
  EXPECT_EQ(r.min_diameter(6), 2u);
}

// A ring of 8: balls grow by 2 a hop; a set of diameter d has at most
// d + 1 chips (the bound says at most 2 d + 1: it may err low only).
TEST(chip_reach, a_ring_bounds_diameters_by_its_balls) {
  std::string links = "    - {chips: [h0.c7, h0.c0], profile: fast}\n";
  for (int i = 0; i < 7; ++i)
    links += "    - {chips: [h0.c" + std::to_string(i) + ", h0.c" +
             std::to_string(i + 1) + "], profile: fast}\n";
  auto c = parse("  kind: explicit\n  hosts: 1\n  chips_per_host: 8\n"
                 "  host_link: host\n  links:\n" +
                 links);
  chip_reach r{c, all_usable(c)};
  EXPECT_EQ(r.clique(), 2u);
  EXPECT_EQ(r.min_reach(3), 1u);
  EXPECT_EQ(r.min_reach(4), 2u);
  EXPECT_EQ(r.min_reach(8), 4u);
  EXPECT_EQ(r.min_diameter(3), 2u);
  EXPECT_EQ(r.min_diameter(6), 3u);
  // Unusable chips neither count nor relay: without c0 the ring is a path
  // of 7, whose middle chip reaches all 7 in 3 hops.
  auto usable = all_usable(c);
  usable[0] = false;
  chip_reach p{c, usable};
  EXPECT_EQ(p.chips(), 7u);
  EXPECT_EQ(p.min_reach(7), 3u);
}

// Groq's node is the largest clique; a group wider than a node spans two
// hops at least.
TEST(chip_reach, a_groq_node_is_the_largest_clique) {
  auto c = test::load_shipped("groq-64");
  auto usable = all_usable(c);
  for (auto s : c.spares)
    usable[s] = false;
  chip_reach r{c, usable};
  EXPECT_EQ(r.clique(), c.chips_per_node);
  EXPECT_EQ(r.min_diameter(c.chips_per_node), 1u);
  EXPECT_EQ(r.min_diameter(c.chips_per_node + 1), 2u);
  EXPECT_EQ(r.min_reach(r.max_degree() + 1), 1u);
  EXPECT_EQ(r.min_reach(r.max_degree() + 2), 2u);
  // A failed chip leaves its node a clique of 7.
  for (uint32_t ch = 0; ch < c.chips_per_node * 9; ch += c.chips_per_node)
    usable[ch] = false;
  chip_reach f{c, usable};
  EXPECT_EQ(f.clique(), c.chips_per_node - 1);
}

} // namespace
} // namespace lockstep::planner::detail
