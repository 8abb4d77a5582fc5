#include "planner/cluster_config.hpp"
#include "planner/topology.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

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
  pcie: {bytes_per_s: 2e9, latency_ns: 500}
topology:
  kind: explicit
  hosts: 2
  chips_per_host: 4
  host_link: pcie
  links:
    - {pattern: intra_host_full_mesh, profile: l}
    - {pattern: inter_host_same_index, profile: l}
  spares: [h1.c3]
transport: {provider: shm, slot_mode: paced, slot_us: 20}
)";

std::string text_of(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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
    EXPECT_EQ(c->node_count(), e.chips + c->host_count()) << e.name;
    // Chip-to-chip links first, within the ports; then exactly one link
    // per chip, in chip order, to its host's endpoint.
    std::vector<uint32_t> degree(c->chip_count());
    size_t chip_links = 0;
    while (chip_links < c->links.size() &&
           c->is_chip_link(c->links[chip_links])) {
      ++degree[c->links[chip_links].a];
      ++degree[c->links[chip_links].b];
      ++chip_links;
    }
    for (auto d : degree)
      ASSERT_LE(d, c->chip.c2c_ports) << e.name;
    ASSERT_EQ(c->links.size() - chip_links, c->chip_count()) << e.name;
    for (uint32_t chip = 0; chip < c->chip_count(); ++chip) {
      const auto& l = c->links[chip_links + chip];
      ASSERT_EQ(l.a, chip) << e.name;
      ASSERT_EQ(l.b, c->host_node(c->ref(chip).host)) << e.name;
      ASSERT_EQ(l.profile, c->host_link) << e.name;
    }
    // The host link has a profile of its own, not the chip-to-chip one.
    EXPECT_NE(c->host_link, c->links.front().profile) << e.name;
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

// Groq's public design: 7 local links (the node) and 4 global ones a chip,
// which serve the rack's nodes and other racks alike. No shipped groq
// config gives a chip more.
TEST(cluster_config, groq_chips_have_seven_local_and_four_global_links) {
  for (auto name : {"groq-64", "groq-576", "groq-1512", "groq-10440"}) {
    auto c = load_cluster_config(config_path(name));
    ASSERT_TRUE(c) << render(c.error());
    std::vector<uint32_t> local(c->chip_count()), global(c->chip_count());
    for (const auto& l : c->links) {
      if (!c->is_chip_link(l))
        continue;
      bool same_node = l.a / c->chips_per_node == l.b / c->chips_per_node;
      ++(same_node ? local : global)[l.a];
      ++(same_node ? local : global)[l.b];
    }
    EXPECT_EQ(*std::min_element(local.begin(), local.end()), 7u) << name;
    EXPECT_EQ(*std::max_element(local.begin(), local.end()), 7u) << name;
    EXPECT_LE(*std::max_element(global.begin(), global.end()), 4u) << name;
  }
}

// rack_wiring: node_mesh joins every two nodes of a rack by exactly one
// link, one per chip; it needs one rack port and nodes_per_rack - 1 ==
// chips_per_node, and says so.
TEST(cluster_config, node_mesh_joins_every_two_nodes_of_a_rack_once) {
  auto groq = text_of(config_path("groq-576"));
  auto mesh = replace(replace(replace(groq, "  rack_wiring: same_index\n",
                                      "  rack_wiring: node_mesh\n"),
                              "rack_ports_per_chip: 2",
                              "rack_ports_per_chip: 1"),
                      "global_ports_per_chip: 2", "global_ports_per_chip: 3");
  auto c = parse_cluster_config(mesh, "test.yaml");
  ASSERT_TRUE(c) << render(c.error());
  uint32_t cpn = c->chips_per_node, per_rack = cpn * 9;
  std::map<std::pair<uint32_t, uint32_t>, int> node_pairs;
  std::vector<int> rack_links(c->chip_count());
  for (const auto& l : c->links) {
    if (!c->is_chip_link(l) || l.a / per_rack != l.b / per_rack ||
        l.a / cpn == l.b / cpn)
      continue;
    ++node_pairs[{l.a / cpn, l.b / cpn}];
    ++rack_links[l.a];
    ++rack_links[l.b];
  }
  EXPECT_EQ(node_pairs.size(), 8u * 36); // 8 racks x C(9, 2) node pairs
  for (const auto& [pair, n] : node_pairs)
    EXPECT_EQ(n, 1) << pair.first << "-" << pair.second;
  EXPECT_EQ(*std::min_element(rack_links.begin(), rack_links.end()), 1);
  EXPECT_EQ(*std::max_element(rack_links.begin(), rack_links.end()), 1);
  auto wrong = error_of(replace(mesh, "rack_ports_per_chip: 1",
                                "rack_ports_per_chip: 2"));
  EXPECT_NE(wrong.find("topology.rack_wiring: node_mesh needs "
                       "rack_ports_per_chip: 1"),
            std::string::npos)
      << wrong;
  auto typo = error_of(replace(mesh, "  rack_wiring: node_mesh\n",
                               "  rack_wiring: mesh\n"));
  EXPECT_NE(typo.find("'mesh' is not same_index or node_mesh"),
            std::string::npos)
      << typo;
}

TEST(cluster_config, explicit_form_and_transport_section) {
  auto c = parse_cluster_config(minimal, "test.yaml");
  ASSERT_TRUE(c) << render(c.error());
  EXPECT_EQ(c->chip_count(), 8u);
  EXPECT_EQ(c->links.size(), 2 * 6 + 4 + 8u); // + one host link per chip
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

// machine: the cores a local cluster's chips share. Optional (real chips
// compute on their own hardware); when present, checked like every figure.
TEST(cluster_config, machine_cores_are_optional_and_checked) {
  auto none = parse_cluster_config(minimal, "test.yaml");
  ASSERT_TRUE(none) << render(none.error());
  EXPECT_EQ(none->machine_cores, 0u);
  auto two = parse_cluster_config(
      replace(minimal, "chip_profile:", "machine: {cores: 2}\nchip_profile:"),
      "test.yaml");
  ASSERT_TRUE(two) << render(two.error());
  EXPECT_EQ(two->machine_cores, 2u);
  EXPECT_NE(canonical_form(*none), canonical_form(*two))
      << "the cores change plans, so plan hashes";
  auto zero = error_of(
      replace(minimal, "chip_profile:", "machine: {cores: 0}\nchip_profile:"));
  EXPECT_NE(zero.find("test.yaml: machine.cores"), std::string::npos) << zero;
  auto text = error_of(replace(minimal, "chip_profile:",
                               "machine: {cores: many}\nchip_profile:"));
  EXPECT_NE(text.find("machine.cores"), std::string::npos) << text;
  auto unknown = error_of(replace(minimal, "chip_profile:",
                                  "machine: {cores: 2, gpus: 1}\nchip_profile:"));
  EXPECT_NE(unknown.find("machine.gpus: unknown key"), std::string::npos)
      << unknown;
  // A link's CPU per transfer (cpu_ns) is optional too.
  EXPECT_EQ(none->link_profiles[0].cpu_ns, 0u);
  auto cpu = parse_cluster_config(
      replace(minimal, "l: {bytes_per_s: 1e9, latency_ns: 100}",
              "l: {bytes_per_s: 1e9, latency_ns: 100, cpu_ns: 4000}"),
      "test.yaml");
  ASSERT_TRUE(cpu) << render(cpu.error());
  EXPECT_EQ(cpu->link_profiles[0].cpu_ns, 4000u);
  EXPECT_NE(canonical_form(*none), canonical_form(*cpu));
  auto bad_cpu = error_of(
      replace(minimal, "l: {bytes_per_s: 1e9, latency_ns: 100}",
              "l: {bytes_per_s: 1e9, latency_ns: 100, cpu_ns: -1}"));
  EXPECT_NE(bad_cpu.find("link_profiles.l.cpu_ns"), std::string::npos)
      << bad_cpu;
  for (auto name : {"local-8", "local-64", "local-512", "local-1500"}) {
    auto c = load_cluster_config(config_path(name));
    ASSERT_TRUE(c) << render(c.error());
    EXPECT_GT(c->machine_cores, 0u) << name << ": chips on one machine";
  }
  for (auto name : {"groq-64", "groq-576"}) {
    auto c = load_cluster_config(config_path(name));
    ASSERT_TRUE(c) << render(c.error());
    EXPECT_EQ(c->machine_cores, 0u) << name << ": every LPU computes alone";
  }
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
           host_link: l, node_link: l, rack_link: l, global_link: l}
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
  // The host link's figures and which profile it uses are part of it.
  auto d = parse_cluster_config(
      replace(minimal, "latency_ns: 500", "latency_ns: 600"), "d.yaml");
  auto e = parse_cluster_config(
      replace(minimal, "host_link: pcie", "host_link: l"), "e.yaml");
  ASSERT_TRUE(c && d && e);
  EXPECT_NE(canonical_form(*a), canonical_form(*d));
  EXPECT_NE(canonical_form(*a), canonical_form(*e));
}

TEST(cluster_config, chip_ids_parse_strictly) {
  EXPECT_EQ(*parse_chip_ref("h3.c5"), (transport::chip_ref{3, 5}));
  EXPECT_EQ(*parse_chip_ref("h3.host"),
            (transport::chip_ref{3, transport::host_endpoint_chip}));
  for (auto bad : {"", "h3", "3.c5", "h3.5", "hx.c1", "h1.c", "h1.c2x",
                   "h.host", "h1.hostx", "h1.hos", "h1.c4294967295"})
    EXPECT_FALSE(parse_chip_ref(bad)) << bad;
}

TEST(cluster_config, host_link_is_required_and_names_a_profile) {
  auto missing = error_of(replace(minimal, "  host_link: pcie\n", ""));
  EXPECT_NE(missing.find("test.yaml: topology.host_link: missing"),
            std::string::npos)
      << missing;
  auto unknown =
      error_of(replace(minimal, "host_link: pcie", "host_link: pci"));
  EXPECT_NE(unknown.find(
                "test.yaml: topology.host_link: no link profile named 'pci'"),
            std::string::npos)
      << unknown;
  auto groq = text_of(config_path("groq-64"));
  auto dragonfly = error_of(replace(groq, "  host_link: pcie", ""));
  EXPECT_NE(dragonfly.find("test.yaml: topology.host_link: missing"),
            std::string::npos)
      << dragonfly;
}

TEST(cluster_config, host_endpoints_are_nodes_after_the_chips) {
  auto c = parse_cluster_config(replace(minimal, "hosts: 2", "hosts: 3"),
                                "test.yaml");
  ASSERT_TRUE(c) << render(c.error());
  EXPECT_EQ(c->chip_count(), 12u);
  EXPECT_EQ(c->host_count(), 3u);
  EXPECT_EQ(c->node_count(), 15u);
  EXPECT_EQ(c->host_node(0), 12u);
  EXPECT_EQ(c->host_node(2), 14u);
  EXPECT_FALSE(c->is_host_node(11));
  EXPECT_TRUE(c->is_host_node(12));
  EXPECT_TRUE(c->is_host_node(14));
  EXPECT_FALSE(c->is_host_node(15));
  EXPECT_EQ(c->host_of_node(14), 2u);
  // "h2.host" round-trips through parse_chip_ref, flat, ref and to_string.
  auto ref = parse_chip_ref("h2.host");
  ASSERT_TRUE(ref);
  auto node = c->flat(*ref);
  ASSERT_TRUE(node) << render(node.error());
  EXPECT_EQ(*node, c->host_node(2));
  EXPECT_EQ(c->ref(*node), *ref);
  EXPECT_EQ(transport::to_string(c->ref(*node)), "h2.host");
  EXPECT_EQ(transport::to_string(c->ref(11)), "h2.c3"); // chips unchanged
  // Errors stay specific.
  auto far = c->flat({3, transport::host_endpoint_chip});
  ASSERT_FALSE(far);
  EXPECT_NE(
      render(far.error()).find("host endpoint h3.host is not in t (3 hosts)"),
      std::string::npos)
      << render(far.error());
  auto not_chip = c->flat_chip(*ref);
  ASSERT_FALSE(not_chip);
  EXPECT_NE(
      render(not_chip.error()).find("h2.host is a host endpoint, not a chip"),
      std::string::npos)
      << render(not_chip.error());
  EXPECT_EQ(*c->flat_chip({2, 3}), 11u);
  // Configs name chips where they mean chips.
  auto link = error_of(replace(minimal,
                               "- {pattern: inter_host_same_index, profile: l}",
                               "- {chips: [h0.c0, h0.host], profile: l}"));
  EXPECT_NE(link.find("topology.links.1.chips: h0.host is a host endpoint, not "
                      "a chip (host links come from host_link)"),
            std::string::npos)
      << link;
  auto spare = error_of(replace(minimal, "[h1.c3]", "[h1.host]"));
  EXPECT_NE(spare.find("topology.spares: h1.host is a host endpoint"),
            std::string::npos)
      << spare;
}

TEST(cluster_config, each_chip_has_one_link_to_its_host) {
  auto c = parse_cluster_config(minimal, "test.yaml");
  ASSERT_TRUE(c) << render(c.error());
  std::vector<uint32_t> host_links(c->chip_count(), 0);
  for (const auto& l : c->links) {
    ASSERT_LT(l.a, l.b);
    ASSERT_FALSE(c->is_host_node(l.a));
    if (!c->is_host_node(l.b))
      continue;
    ++host_links[l.a];
    EXPECT_EQ(c->host_of_node(l.b), c->ref(l.a).host);
    EXPECT_EQ(c->link_profiles[l.profile].name, "pcie");
  }
  for (auto n : host_links)
    EXPECT_EQ(n, 1u);
  topology t{*c};
  EXPECT_EQ(t.node_count(), 10u);
  EXPECT_EQ(t.chip_count(), 8u);
  // The host link is each chip's last out-link (destinations in order).
  auto out = t.out_links(5);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(t.link_dst(out.back()), c->host_node(1));
  EXPECT_EQ(t.link_name(out.back()), "h1.c1->h1.host");
  EXPECT_EQ(t.out_links(c->host_node(1)).size(), 4u);
}

TEST(cluster_config, host_links_take_no_c2c_port) {
  // Each chip has 3 links inside its host and 1 to the other host: exactly
  // 4 ports, plus its host link, which is PCIe.
  auto c = parse_cluster_config(
      replace(minimal, "c2c_ports: 8", "c2c_ports: 4"), "test.yaml");
  ASSERT_TRUE(c) << render(c.error());
  // Same on a dragonfly: c2c_ports equal to the busiest chip's chip links.
  auto groq = load_cluster_config(config_path("groq-576"));
  ASSERT_TRUE(groq) << render(groq.error());
  std::vector<uint32_t> degree(groq->chip_count());
  for (const auto& l : groq->links)
    if (groq->is_chip_link(l)) {
      ++degree[l.a];
      ++degree[l.b];
    }
  auto busiest = *std::max_element(degree.begin(), degree.end());
  auto tight = parse_cluster_config(
      replace(text_of(config_path("groq-576")), "c2c_ports: 16",
              "c2c_ports: " + std::to_string(busiest)),
      "test.yaml");
  EXPECT_TRUE(tight) << busiest << ": " << render(tight.error());
}

TEST(cluster_config, routes_never_relay_through_a_host_endpoint) {
  // Two chips of one host joined only through the host's endpoint: a
  // hand-built config (the loader rejects it, see below).
  cluster_config c;
  c.name = "t";
  c.link_profiles = {{"pcie", 1e9, 100}};
  c.chips_per_host = {2};
  c.first_chip_of_host = {0};
  c.links = {{0, 2, 0}, {1, 2, 0}};
  c.host_link = 0;
  topology t{c};
  EXPECT_FALSE(t.may_relay(c.host_node(0)));
  EXPECT_TRUE(t.may_relay(0));
  const auto& hops = t.hops_to(1);
  ASSERT_EQ(hops.size(), c.node_count());
  EXPECT_EQ(hops[0], topology::no_route);
  EXPECT_EQ(hops[c.host_node(0)], 1u); // the host may be a route's source
  // block_relays() keeps host endpoints blocked.
  t.block_relays({});
  EXPECT_FALSE(t.may_relay(c.host_node(0)));
  EXPECT_EQ(t.hops_to(1)[0], topology::no_route);
  // A host endpoint can be a route's destination.
  EXPECT_EQ(t.hops_to(c.host_node(0))[0], 1u);
  // On a real config, routes between chips ignore the host links: h0.c1 is
  // two chip hops from h1.c0 (not chip -> host -> chip).
  auto m = parse_cluster_config(minimal, "test.yaml");
  ASSERT_TRUE(m);
  topology tm{*m};
  EXPECT_EQ(tm.hops_to(4)[1], 2u);
  for (uint32_t h = 0; h < m->host_count(); ++h)
    EXPECT_FALSE(tm.may_relay(m->host_node(h)));
}

// The route search's table: searched only as far as a route from src
// needs (its distance), exact there, and the same as the whole table
// however the searches interleave (they resume a destination's search).
TEST(cluster_config, route_tables_are_exact_as_far_as_a_route_needs) {
  auto c = load_cluster_config(config_path("groq-576"));
  ASSERT_TRUE(c);
  topology whole{*c}, near{*c};
  std::vector<uint32_t> blocked(c->spares.begin(), c->spares.end());
  whole.block_relays(blocked);
  near.block_relays(blocked);
  uint32_t checked = 0;
  for (uint32_t dst : {0u, 5u, 130u, 300u, 575u})
    for (uint32_t src : {1u, 9u, 75u, 200u, 440u, 575u}) {
      auto full = whole.hops_to(dst); // a copy: the next call may evict
      const auto& part = near.hops_near(dst, src);
      ASSERT_NE(full[src], topology::no_route);
      EXPECT_EQ(part[src], full[src]) << src << " -> " << dst;
      for (uint32_t v = 0; v < c->node_count(); ++v)
        if (full[v] <= full[src]) {
          EXPECT_EQ(part[v], full[v]) << v << " -> " << dst;
          ++checked;
        }
    }
  EXPECT_GT(checked, 1000u);
  auto whole0 = whole.hops_to(0);
  EXPECT_EQ(near.hops_to(0), whole0); // resumed to the end
}

TEST(cluster_config, disconnected_topologies_are_rejected_naming_two_chips) {
  auto groq = text_of(config_path("groq-64"));
  auto dragonfly = error_of(
      replace(groq, "rack_ports_per_chip: 4", "rack_ports_per_chip: 0"));
  EXPECT_NE(dragonfly.find("test.yaml: topology: chip h0.c0 cannot reach h1.c0 "
                           "over chip-to-chip links (rack_ports_per_chip: 0 "
                           "leaves nodes unconnected?)"),
            std::string::npos)
      << dragonfly;
  // Racks the global ports do not join: 3 racks of one chip with one
  // global port each, rack r's aiming at rack r + 1 (no port pairs up).
  auto racks = error_of(replace(
      replace(replace(replace(groq, "chips_per_node: 8", "chips_per_node: 1"),
                      "nodes_per_rack: 9", "nodes_per_rack: 1"),
              "global_ports_per_chip: 0", "global_ports_per_chip: 1"),
      "racks: 1\n  spare_nodes_per_rack: 1",
      "racks: 3\n  spare_nodes_per_rack: 0\n  global_link: c2c"));
  EXPECT_NE(racks.find("chip h0.c0 cannot reach h1.c0 over chip-to-chip links "
                       "(global_ports_per_chip: 1 leaves racks unconnected?)"),
            std::string::npos)
      << racks;
  auto expl = error_of(replace(
      minimal, "    - {pattern: inter_host_same_index, profile: l}\n", ""));
  EXPECT_NE(expl.find("test.yaml: topology: chip h0.c0 cannot reach h1.c0 over "
                      "chip-to-chip links (do the links: rules join them?)"),
            std::string::npos)
      << expl;
  // Connected only through a spare: routes never relay through spares.
  auto spare =
      error_of(replace(replace(replace(minimal, "hosts: 2", "hosts: 3"),
                               "chips_per_host: 4", "chips_per_host: 1"),
                       "    - {pattern: intra_host_full_mesh, profile: l}\n"
                       "    - {pattern: inter_host_same_index, profile: l}\n"
                       "  spares: [h1.c3]",
                       "    - {chips: [h0.c0, h1.c0], profile: l}\n"
                       "    - {chips: [h1.c0, h2.c0], profile: l}\n"
                       "  spares: [h1.c0]"));
  EXPECT_NE(spare.find("test.yaml: topology: chip h0.c0 reaches h2.c0 only "
                       "through spare chips, and routes never relay through "
                       "spares"),
            std::string::npos)
      << spare;
}

} // namespace
} // namespace lockstep::planner
