#include "planner/cluster_config.hpp"

#include <gtest/gtest.h>

#include <set>

namespace lockstep::planner {
namespace {

std::string config_path(const std::string& name) {
  return std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/" + name +
         ".yaml";
}

const char* minimal = R"(name: t
chip_profile:
  name: c
  sram_bytes: 1e6
  flops: {f32: 1e9, f16: 1e9, int8: 1e9}
  sram_bytes_per_s: 1e9
  c2c_ports: 8
  op_overhead_ns: 0
link_profiles:
  l: {bytes_per_s: 1e9, latency_ns: 100}
topology:
  kind: explicit
  hosts: 2
  chips_per_host: 4
  links:
    - {pattern: intra_host_full_mesh, profile: l}
    - {pattern: inter_host_same_index, profile: l}
  spares: [h1.c3]
transport: {provider: shm, slot_mode: paced, slot_us: 20}
)";

std::string error_of(const std::string& yaml) {
  auto c = parse_cluster_config(yaml, "test.yaml");
  return c ? "" : render(c.error());
}

std::string replace(std::string s, const std::string& from,
                    const std::string& to) {
  auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return s.replace(pos, from.size(), to);
}

TEST(cluster_config, every_shipped_config_loads) {
  struct expect {
    const char* name;
    uint32_t chips, spares;
  };
  for (auto e :
       {expect{"local-8", 8, 1}, expect{"local-64", 64, 2},
        expect{"local-512", 512, 2}, expect{"local-1500", 1500, 2},
        expect{"groq-64", 72, 8}, expect{"groq-576", 576, 64},
        expect{"groq-1512", 1512, 168}, expect{"groq-10440", 10440, 1160}}) {
    auto c = load_cluster_config(config_path(e.name));
    ASSERT_TRUE(c) << e.name << ": " << render(c.error());
    EXPECT_EQ(c->chip_count(), e.chips) << e.name;
    EXPECT_EQ(c->spares.size(), e.spares) << e.name;
    std::vector<uint32_t> degree(c->chip_count());
    for (const auto& l : c->links) {
      ++degree[l.a];
      ++degree[l.b];
    }
    for (auto d : degree)
      ASSERT_LE(d, c->chip.c2c_ports) << e.name;
  }
}

TEST(cluster_config, groq_dragonfly_matches_the_published_shape) {
  auto c = load_cluster_config(config_path("groq-576"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->chips_per_node, 8u);
  EXPECT_EQ(c->chip.sram_bytes, 230'000'000u);
  // Chips of one node are fully connected.
  std::set<std::pair<uint32_t, uint32_t>> links;
  for (const auto& l : c->links)
    links.insert({l.a, l.b});
  for (uint32_t a = 0; a < 8; ++a)
    for (uint32_t b = a + 1; b < 8; ++b)
      EXPECT_TRUE(links.contains({a, b}));
  // The spare node of rack 0 is node 8: chips 64..71.
  EXPECT_EQ(c->spares.front(), 64u);
  EXPECT_EQ(c->transport.mode, transport::slot_mode::logical);
}

TEST(cluster_config, explicit_form_and_transport_section) {
  auto c = parse_cluster_config(minimal, "test.yaml");
  ASSERT_TRUE(c) << render(c.error());
  EXPECT_EQ(c->chip_count(), 8u);
  EXPECT_EQ(c->links.size(), 2 * 6 + 4u);
  EXPECT_EQ(c->spares, (std::vector<uint32_t>{7}));
  EXPECT_EQ(c->transport.mode, transport::slot_mode::paced);
  EXPECT_EQ(c->transport.slot_ns, 20'000u);
  EXPECT_EQ(transport::to_string(c->ref(5)), "h1.c1");
  EXPECT_EQ(*c->flat({1, 1}), 5u);
  EXPECT_FALSE(c->flat({2, 0}));
}

TEST(cluster_config, errors_name_file_key_path_and_problem) {
  auto unknown = error_of(replace(minimal, "c2c_ports: 8", "c2c_portz: 8"));
  EXPECT_NE(unknown.find("test.yaml: chip_profile.c2c_portz: unknown key"),
            std::string::npos)
      << unknown;
  auto missing = error_of(replace(minimal, "  sram_bytes: 1e6\n", ""));
  EXPECT_NE(missing.find("chip_profile.sram_bytes: missing"), std::string::npos)
      << missing;
  auto negative =
      error_of(replace(minimal, "sram_bytes: 1e6", "sram_bytes: -5"));
  EXPECT_NE(negative.find("chip_profile.sram_bytes"), std::string::npos);
  auto ports = error_of(replace(minimal, "c2c_ports: 8", "c2c_ports: 2"));
  EXPECT_NE(ports.find("ports over-subscribed: chip h0.c0 has 4 links"),
            std::string::npos)
      << ports;
  auto kind = error_of(replace(minimal, "kind: explicit", "kind: torus"));
  EXPECT_NE(kind.find("topology.kind: 'torus'"), std::string::npos) << kind;
  auto spare = error_of(replace(minimal, "[h1.c3]", "[h9.c3]"));
  EXPECT_NE(spare.find("topology.spares: chip h9.c3 is not in t"),
            std::string::npos)
      << spare;
  auto profile = error_of(replace(minimal, "profile: l}\n    - {pattern: inter",
                                  "profile: x}\n    - {pattern: inter"));
  EXPECT_NE(profile.find("no link profile named 'x'"), std::string::npos)
      << profile;
  auto mode = error_of(replace(minimal, "slot_mode: paced", "slot_mode: fast"));
  EXPECT_NE(mode.find("transport.slot_mode"), std::string::npos) << mode;
  auto yaml = error_of("name: [unclosed");
  EXPECT_NE(yaml.find("not valid YAML"), std::string::npos) << yaml;
  auto file = load_cluster_config("/nonexistent/x.yaml");
  ASSERT_FALSE(file);
  EXPECT_EQ(lockstep::kind_of(file.error()), error_kind::invalid_input);
}

TEST(cluster_config, impossible_dragonfly_is_rejected) {
  auto groq = load_cluster_config(config_path("groq-64"));
  ASSERT_TRUE(groq);
  std::string text = R"(name: d
chip_profile:
  name: c
  sram_bytes: 1e6
  flops: {f32: 1, f16: 1, int8: 1}
  sram_bytes_per_s: 1
  c2c_ports: 16
  op_overhead_ns: 0
link_profiles:
  l: {bytes_per_s: 1e9, latency_ns: 1}
topology: {kind: dragonfly, chips_per_node: 8, nodes_per_rack: 2, racks: 2,
           spare_nodes_per_rack: 2, global_ports_per_chip: 1,
           node_link: l, rack_link: l, global_link: l}
)";
  auto err = error_of(text);
  EXPECT_NE(err.find("spare_nodes_per_rack: must be less than nodes_per_rack"),
            std::string::npos)
      << err;
}

TEST(cluster_config, canonical_form_ignores_spelling) {
  auto a = parse_cluster_config(minimal, "a.yaml");
  auto b = parse_cluster_config(
      replace(replace(minimal, "sram_bytes: 1e6", "sram_bytes: 1000000"),
              "provider: shm, ", ""),
      "b.yaml");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(canonical_form(*a), canonical_form(*b));
  auto c = parse_cluster_config(replace(minimal, "1e6", "2e6"), "c.yaml");
  EXPECT_NE(canonical_form(*a), canonical_form(*c));
}

TEST(cluster_config, chip_ids_parse_strictly) {
  EXPECT_EQ(*parse_chip_ref("h3.c5"), (transport::chip_ref{3, 5}));
  for (auto bad : {"", "h3", "3.c5", "h3.5", "hx.c1", "h1.c", "h1.c2x"})
    EXPECT_FALSE(parse_chip_ref(bad)) << bad;
}

} // namespace
} // namespace lockstep::planner
