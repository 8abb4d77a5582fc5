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

// Every chip of `c` but its spares.
std::vector<bool> spares_off(const cluster_config& c) {
  auto usable = all_usable(c);
  for (auto s : c.spares)
    usable[s] = false;
  return usable;
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
  EXPECT_EQ(r.max_diameter2_set(), 6u);
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
  // Balls of radius 2 hold 5 chips, but 3 in a row are the most that are
  // all within 2 hops of each other.
  EXPECT_EQ(r.max_diameter2_set(), 3u);
  EXPECT_EQ(r.min_diameter(4), 3u);
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
  auto usable = spares_off(c);
  chip_reach r{c, usable};
  EXPECT_EQ(r.clique(), c.chips_per_node);
  EXPECT_EQ(r.min_diameter(c.chips_per_node), 1u);
  EXPECT_EQ(r.min_diameter(c.chips_per_node + 1), 2u);
  EXPECT_EQ(r.min_reach(r.max_degree() + 1), 1u);
  EXPECT_EQ(r.min_reach(r.max_degree() + 2), 2u);
  // Nodes n, n+1, n+2 are linked pairwise (same index, +-1 and +-2): 24
  // chips within 2 hops of each other, and no more.
  EXPECT_EQ(r.max_diameter2_set(), 3 * c.chips_per_node);
  EXPECT_EQ(r.min_diameter(3 * c.chips_per_node), 2u);
  EXPECT_EQ(r.min_diameter(3 * c.chips_per_node + 1), 3u);
  // A failed chip leaves its node a clique of 7.
  for (uint32_t ch = 0; ch < c.chips_per_node * 9; ch += c.chips_per_node)
    usable[ch] = false;
  chip_reach f{c, usable};
  EXPECT_EQ(f.clique(), c.chips_per_node - 1);
}

// The most chips of `c` (n chips, `edges`) that are all within 2 hops of
// each other, by trying every subset (chips not `usable` excluded, and
// relaying nothing).
uint32_t exhaustive_diameter2(uint32_t n,
                              const std::vector<std::pair<uint32_t, uint32_t>>& edges,
                              const std::vector<bool>& usable) {
  // All-pairs hops among usable chips (Floyd-Warshall).
  constexpr uint32_t far = 1000;
  std::vector<std::vector<uint32_t>> d(n, std::vector<uint32_t>(n, far));
  for (uint32_t i = 0; i < n; ++i)
    d[i][i] = 0;
  for (auto [a, b] : edges)
    if (usable[a] && usable[b])
      d[a][b] = d[b][a] = 1;
  for (uint32_t m = 0; m < n; ++m)
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t j = 0; j < n; ++j)
        d[i][j] = std::min(d[i][j], d[i][m] + d[m][j]);
  uint32_t most = 0;
  for (uint32_t set = 1; set < (1u << n); ++set) {
    bool ok = true;
    uint32_t size = 0;
    for (uint32_t i = 0; i < n && ok; ++i) {
      if (!(set >> i & 1))
        continue;
      ok = usable[i];
      ++size;
      for (uint32_t j = i + 1; j < n && ok; ++j)
        ok = !(set >> j & 1) || d[i][j] <= 2;
    }
    if (ok)
      most = std::max(most, size);
  }
  return most;
}

cluster_config with_edges(uint32_t n,
                          const std::vector<std::pair<uint32_t, uint32_t>>& edges) {
  std::string links;
  for (auto [a, b] : edges)
    links += "    - {chips: [h0.c" + std::to_string(a) + ", h0.c" +
             std::to_string(b) + "], profile: fast}\n";
  return parse("  kind: explicit\n  hosts: 1\n  chips_per_host: " +
               std::to_string(n) + "\n  host_link: host\n  links:\n" +
               links);
}

// At Groq's largest scale the count stays within its work budget (it
// does not fall back to the balls, which hold 60-odd chips): two nodes of
// a rack's ring.
TEST(chip_reach, groq_10440_counts_its_diameter_2_sets) {
  auto c = test::load_shipped("groq-10440");
  chip_reach r{c, spares_off(c)};
  EXPECT_EQ(r.max_diameter2_set(), 2 * c.chips_per_node);
  EXPECT_EQ(r.min_diameter(2 * c.chips_per_node + 1), 3u);
}

// The largest set of diameter <= 2 against every subset of small graphs:
// a ring of 11 with chords (i, i + 3) on even i, and 16 chips with
// irregular chords; each whole and with a chip lost.
TEST(chip_reach, diameter_2_sets_match_an_exhaustive_search) {
  std::vector<std::pair<uint32_t, uint32_t>> ring;
  for (uint32_t i = 0; i < 11; ++i) {
    ring.push_back({i, (i + 1) % 11});
    if (i % 2 == 0)
      ring.push_back({i, (i + 3) % 11});
  }
  std::vector<std::pair<uint32_t, uint32_t>> mesh;
  for (uint32_t i = 0; i < 16; ++i) {
    mesh.push_back({i, (i + 1) % 16});
    if (i % 3 == 0)
      mesh.push_back({i, (i + 5) % 16});
    if (i % 4 == 1)
      mesh.push_back({i, (i + 7) % 16});
  }
  mesh.push_back({0, 8});
  mesh.push_back({2, 8});
  mesh.push_back({4, 8});
  struct graph {
    uint32_t n;
    const std::vector<std::pair<uint32_t, uint32_t>>* edges;
    uint32_t lost;     // n: none
    uint32_t expected; // as the search found it
  };
  for (auto g : {graph{11, &ring, 11, 5}, graph{11, &ring, 4, 5},
                 graph{16, &mesh, 16, 8}, graph{16, &mesh, 8, 5}}) {
    auto c = with_edges(g.n, *g.edges);
    auto usable = all_usable(c);
    if (g.lost < g.n)
      usable[g.lost] = false;
    uint32_t most = exhaustive_diameter2(g.n, *g.edges, usable);
    chip_reach r{c, usable};
    EXPECT_EQ(r.max_diameter2_set(), most)
        << g.n << " chips, chip " << g.lost << " lost";
    EXPECT_EQ(most, g.expected);
    EXPECT_EQ(r.min_diameter(most + 1), 3u);
    // Some ball of radius 2 holds more: the ball bound alone would have
    // allowed 2 hops there.
    EXPECT_LE(r.min_reach(most + 1), 2u);
  }
}

} // namespace
} // namespace lockstep::planner::detail
