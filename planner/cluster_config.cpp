#include "planner/cluster_config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace lockstep::planner {

const char* to_string(errc code) {
  switch (code) {
  case errc::invalid_config:
    return "invalid_config";
  case errc::infeasible:
    return "infeasible";
  case errc::invalid_plan:
    return "invalid_plan";
  case errc::unknown_chip:
    return "unknown_chip";
  case errc::invalid_argument:
    return "invalid_argument";
  case errc::io_error:
    return "io_error";
  }
  return "unknown";
}

error_kind kind_of(errc code) {
  switch (code) {
  case errc::invalid_plan:
  case errc::io_error:
    return error_kind::failed;
  default:
    return error_kind::invalid_input;
  }
}

transport::chip_ref cluster_config::ref(uint32_t node) const {
  if (is_host_node(node))
    return {host_of_node(node), transport::host_endpoint_chip};
  auto it = std::upper_bound(first_chip_of_host.begin(),
                             first_chip_of_host.end(), node);
  auto host = static_cast<uint32_t>(it - first_chip_of_host.begin() - 1);
  return {host, node - first_chip_of_host[host]};
}

caf::expected<uint32_t> cluster_config::flat(transport::chip_ref c) const {
  if (c.chip == transport::host_endpoint_chip) {
    if (c.host >= host_count())
      return caf::make_error(errc::unknown_chip,
                             "host endpoint " + transport::to_string(c) +
                                 " is not in " + name + " (" +
                                 std::to_string(host_count()) + " hosts)");
    return host_node(c.host);
  }
  if (c.host >= chips_per_host.size() || c.chip >= chips_per_host[c.host])
    return caf::make_error(errc::unknown_chip,
                           "chip " + transport::to_string(c) + " is not in " +
                               name + " (" + std::to_string(chip_count()) +
                               " chips)");
  return first_chip_of_host[c.host] + c.chip;
}

caf::expected<uint32_t> cluster_config::flat_chip(transport::chip_ref c) const {
  if (c.chip == transport::host_endpoint_chip)
    return caf::make_error(errc::unknown_chip,
                           transport::to_string(c) +
                               " is a host endpoint, not a chip");
  return flat(c);
}

caf::expected<transport::chip_ref> parse_chip_ref(std::string_view text) {
  auto bad = [&] {
    return caf::make_error(errc::invalid_argument,
                           "bad chip id '" + std::string{text} +
                               "' (expected e.g. h3.c5 or h3.host)");
  };
  auto dot = text.find('.');
  if (text.size() < 4 || text[0] != 'h' || dot == std::string_view::npos)
    return bad();
  transport::chip_ref c;
  auto parse = [](std::string_view s, uint32_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return !s.empty() && ec == std::errc{} && p == s.data() + s.size();
  };
  if (!parse(text.substr(1, dot - 1), c.host))
    return bad();
  auto rest = text.substr(dot + 1);
  if (rest == "host") {
    c.chip = transport::host_endpoint_chip;
    return c;
  }
  // "h3.c4294967295" would alias h3.host: no host has that many chips.
  if (rest.empty() || rest[0] != 'c' || !parse(rest.substr(1), c.chip) ||
      c.chip == transport::host_endpoint_chip)
    return bad();
  return c;
}

namespace {

// Walks a YAML mapping, remembering the key path for errors and rejecting
// keys it was not told about.
class reader {
public:
  reader(const YAML::Node& node, std::string path, const std::string* file)
      : node_(node)
      , path_(std::move(path))
      , file_(file) {}

  caf::error error(const std::string& key, const std::string& what) const {
    return caf::make_error(errc::invalid_config,
                           *file_ + ": " + join(key) + ": " + what);
  }
  std::string join(const std::string& key) const {
    return path_.empty() ? key : key.empty() ? path_ : path_ + "." + key;
  }

  caf::error expect_map(std::initializer_list<const char*> allowed) const {
    if (!node_ || !node_.IsMap())
      return error("", "expected a mapping");
    std::set<std::string> ok(allowed.begin(), allowed.end());
    for (const auto& kv : node_) {
      auto key = kv.first.as<std::string>();
      if (!ok.contains(key)) {
        std::string list;
        for (const auto& k : ok)
          list += (list.empty() ? "" : ", ") + k;
        return error(key, "unknown key (expected one of: " + list + ")");
      }
    }
    return {};
  }

  YAML::Node child(const char* key) const { return node_[key]; }
  reader sub(const char* key) const {
    return reader{node_[key], join(key), file_};
  }
  bool has(const char* key) const { return static_cast<bool>(node_[key]); }

  caf::expected<std::string> text(const char* key) const {
    auto n = node_[key];
    if (!n)
      return error(key, "missing");
    if (!n.IsScalar())
      return error(key, "expected a string");
    return n.as<std::string>();
  }

  // Numbers may be written 230e6 or 230000000.
  caf::expected<double> number(const char* key, double min_value) const {
    auto n = node_[key];
    if (!n)
      return error(key, "missing");
    double v = 0;
    try {
      v = n.as<double>();
    } catch (const YAML::Exception&) {
      return error(key, "expected a number");
    }
    if (!std::isfinite(v) || v < min_value)
      return error(key, "must be a number >= " + fmt(min_value));
    return v;
  }

  caf::expected<uint64_t> integer(const char* key, uint64_t min_value,
                                  uint64_t max_value) const {
    auto v = number(key, static_cast<double>(min_value));
    if (!v)
      return v.error();
    if (*v != std::floor(*v) || *v > static_cast<double>(max_value))
      return error(key, "must be an integer in [" + std::to_string(min_value) +
                            ", " + std::to_string(max_value) + "]");
    return static_cast<uint64_t>(*v);
  }

  const YAML::Node& node() const { return node_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }

private:
  static std::string fmt(double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  }
  YAML::Node node_;
  std::string path_;
  const std::string* file_;
};

#define LOCKSTEP_TRY(var, expr)                                                \
  auto var##_result = (expr);                                                  \
  if (!var##_result)                                                           \
    return var##_result.error();                                               \
  auto var = *var##_result

caf::expected<chip_profile> read_chip_profile(const reader& r) {
  if (auto err =
          r.expect_map({"name", "sram_bytes", "flops", "sram_bytes_per_s",
                        "c2c_ports", "op_overhead_ns"}))
    return err;
  chip_profile p;
  LOCKSTEP_TRY(name, r.text("name"));
  p.name = name;
  LOCKSTEP_TRY(sram, r.integer("sram_bytes", 1, uint64_t{1} << 50));
  p.sram_bytes = sram;
  auto fr = r.sub("flops");
  if (auto err = fr.expect_map({"f32", "f16", "int8"}))
    return err;
  LOCKSTEP_TRY(f32, fr.number("f32", 1));
  LOCKSTEP_TRY(f16, fr.number("f16", 1));
  LOCKSTEP_TRY(i8, fr.number("int8", 1));
  p.flops_f32 = f32;
  p.flops_f16 = f16;
  p.flops_int8 = i8;
  LOCKSTEP_TRY(bw, r.number("sram_bytes_per_s", 1));
  p.sram_bytes_per_s = bw;
  LOCKSTEP_TRY(ports, r.integer("c2c_ports", 1, 4096));
  p.c2c_ports = static_cast<uint32_t>(ports);
  LOCKSTEP_TRY(overhead, r.integer("op_overhead_ns", 0, 1'000'000'000));
  p.op_overhead_ns = overhead;
  return p;
}

caf::error read_link_profiles(const reader& r, cluster_config& c) {
  if (!r.node() || !r.node().IsMap() || r.node().size() == 0)
    return r.error("", "expected a mapping of link profile names");
  for (const auto& kv : r.node()) {
    auto name = kv.first.as<std::string>();
    reader lr{kv.second, r.join(name), &r.file()};
    if (auto err = lr.expect_map({"bytes_per_s", "latency_ns", "cpu_ns"}))
      return err;
    LOCKSTEP_TRY(bw, lr.number("bytes_per_s", 1));
    LOCKSTEP_TRY(lat, lr.integer("latency_ns", 0, 1'000'000'000));
    uint64_t cpu = 0;
    if (kv.second["cpu_ns"]) {
      LOCKSTEP_TRY(cpu_value, lr.integer("cpu_ns", 0, 1'000'000'000));
      cpu = cpu_value;
    }
    c.link_profiles.push_back({name, bw, lat, cpu});
  }
  if (c.link_profiles.size() > 255)
    return r.error("", "at most 255 link profiles");
  return {};
}

caf::expected<uint8_t> profile_index(const reader& r, const char* key,
                                     const cluster_config& c) {
  LOCKSTEP_TRY(name, r.text(key));
  for (size_t i = 0; i < c.link_profiles.size(); ++i)
    if (c.link_profiles[i].name == name)
      return static_cast<uint8_t>(i);
  return r.error(key, "no link profile named '" + name + "'");
}

void set_hosts(cluster_config& c, std::vector<uint32_t> chips_per_host) {
  c.chips_per_host = std::move(chips_per_host);
  c.first_chip_of_host.clear();
  uint32_t sum = 0;
  for (auto n : c.chips_per_host) {
    c.first_chip_of_host.push_back(sum);
    sum += n;
  }
}

// Links collected as a set of (a, b) pairs so generators may overlap.
class link_set {
public:
  void add(uint32_t a, uint32_t b, uint8_t profile) {
    if (a == b)
      return;
    if (a > b)
      std::swap(a, b);
    auto key = (uint64_t{a} << 32) | b;
    if (seen_.insert(key).second)
      links_.push_back({a, b, profile});
  }
  std::vector<link_spec> take() {
    std::sort(links_.begin(), links_.end(), [](auto& x, auto& y) {
      return std::tie(x.a, x.b) < std::tie(y.a, y.b);
    });
    return std::move(links_);
  }

private:
  std::set<uint64_t> seen_;
  std::vector<link_spec> links_;
};

// What to suggest when two chips cannot reach each other: the key that most
// likely left them apart.
struct reach_hint {
  bool dragonfly = false;
  uint64_t chips_per_rack = 0;
  uint64_t rack_ports = 0;
  uint64_t global_ports = 0;

  std::string operator()(uint32_t a, uint32_t b) const {
    if (!dragonfly)
      return "do the links: rules join them?";
    if (a / chips_per_rack == b / chips_per_rack)
      return "rack_ports_per_chip: " + std::to_string(rack_ports) +
             " leaves nodes unconnected?";
    return "global_ports_per_chip: " + std::to_string(global_ports) +
           " leaves racks unconnected?";
  }
};

caf::error read_dragonfly(const reader& r, cluster_config& c,
                          reach_hint& hint) {
  if (auto err =
          r.expect_map({"kind", "chips_per_node", "nodes_per_rack", "racks",
                        "spare_nodes_per_rack", "global_ports_per_chip",
                        "rack_ports_per_chip", "rack_wiring", "chips_per_host",
                        "node_link", "rack_link", "global_link", "host_link"}))
    return err;
  LOCKSTEP_TRY(cpn, r.integer("chips_per_node", 1, 64));
  LOCKSTEP_TRY(npr, r.integer("nodes_per_rack", 1, 64));
  LOCKSTEP_TRY(racks, r.integer("racks", 1, 1024));
  LOCKSTEP_TRY(spare, r.integer("spare_nodes_per_rack", 0, 64));
  LOCKSTEP_TRY(gports, r.integer("global_ports_per_chip", 0, 64));
  uint64_t rports = npr - 1;
  if (r.has("rack_ports_per_chip")) {
    LOCKSTEP_TRY(v, r.integer("rack_ports_per_chip", 0, 64));
    rports = v;
  }
  // How a rack's nodes are joined: `same_index` links chip i of a node to
  // chip i of the nodes ±1 .. ±ports/2 away; `node_mesh` joins every two
  // nodes by one link, chip i of node n to chip (cpn-1-i) of node n+1+i
  // (one rack port per chip, so nodes_per_rack - 1 == chips_per_node).
  bool node_mesh = false;
  if (r.has("rack_wiring")) {
    LOCKSTEP_TRY(w, r.text("rack_wiring"));
    if (w != "same_index" && w != "node_mesh")
      return r.error("rack_wiring",
                     "'" + w + "' is not same_index or node_mesh");
    node_mesh = w == "node_mesh";
  }
  if (node_mesh && (rports != 1 || npr - 1 != cpn))
    return r.error("rack_wiring",
                   "node_mesh needs rack_ports_per_chip: 1 and nodes_per_rack "
                   "- 1 == chips_per_node (one link per pair of nodes), got " +
                       std::to_string(rports) + " and " + std::to_string(npr) +
                       " nodes of " + std::to_string(cpn));
  uint64_t cph = cpn;
  if (r.has("chips_per_host")) {
    LOCKSTEP_TRY(v, r.integer("chips_per_host", 1, 4096));
    cph = v;
  }
  if (spare >= npr)
    return r.error("spare_nodes_per_rack",
                   "must be less than nodes_per_rack (" + std::to_string(npr) +
                       ")");
  uint64_t total = cpn * npr * racks;
  if (total % cph != 0)
    return r.error("chips_per_host",
                   "must divide the " + std::to_string(total) + " chips");
  if (total > 200'000)
    return r.error("racks", "more than 200000 chips");
  LOCKSTEP_TRY(node_link, profile_index(r, "node_link", c));
  LOCKSTEP_TRY(rack_link, profile_index(r, "rack_link", c));
  uint8_t global_link = rack_link;
  if (racks > 1) {
    LOCKSTEP_TRY(g, profile_index(r, "global_link", c));
    global_link = g;
    if (gports == 0)
      return r.error("global_ports_per_chip",
                     "must be > 0 to connect more than one rack");
  }
  set_hosts(c, std::vector<uint32_t>(total / cph, static_cast<uint32_t>(cph)));
  c.chips_per_node = static_cast<uint32_t>(cpn);
  hint = {true, cpn * npr, rports, gports};
  auto chip = [&](uint64_t rack, uint64_t node, uint64_t i) {
    return static_cast<uint32_t>((rack * npr + node) * cpn + i);
  };
  link_set links;
  for (uint64_t rk = 0; rk < racks; ++rk)
    for (uint64_t n = 0; n < npr; ++n)
      for (uint64_t i = 0; i < cpn; ++i) {
        for (uint64_t j = i + 1; j < cpn; ++j) // node: full mesh
          links.add(chip(rk, n, i), chip(rk, n, j), node_link);
        if (node_mesh) {
          // Each pair once: from the lower end of the pairing.
          uint64_t m = (n + 1 + i) % npr, j = cpn - 1 - i;
          if (chip(rk, n, i) < chip(rk, m, j))
            links.add(chip(rk, n, i), chip(rk, m, j), rack_link);
          continue;
        }
        // Rack: the same chip index on the nodes d = 1 .. ports/2 away
        // (all other nodes when ports allow: a full mesh of nodes).
        for (uint64_t d = 1; d <= rports / 2 || (rports == npr - 1 && d < npr);
             ++d) {
          if (d >= npr)
            break;
          links.add(chip(rk, n, i), chip(rk, (n + d) % npr, i), rack_link);
        }
      }
  if (racks > 1) {
    // Global ports: rack a's k-th port slot aims at rack
    // (a + 1 + k mod (R - 1)) mod R; the j-th slot of a aiming at b pairs
    // with the j-th slot of b aiming at a.
    uint64_t slots = cpn * npr * gports;
    std::map<std::pair<uint64_t, uint64_t>, std::vector<uint32_t>> aims;
    for (uint64_t a = 0; a < racks; ++a)
      for (uint64_t k = 0; k < slots; ++k) {
        uint64_t b = (a + 1 + k % (racks - 1)) % racks;
        uint64_t local = k / gports; // chip within rack
        aims[{a, b}].push_back(chip(a, local / cpn, local % cpn));
      }
    for (uint64_t a = 0; a < racks; ++a)
      for (uint64_t b = a + 1; b < racks; ++b) {
        auto& x = aims[{a, b}];
        auto& y = aims[{b, a}];
        for (size_t j = 0; j < std::min(x.size(), y.size()); ++j)
          links.add(x[j], y[j], global_link);
      }
  }
  c.links = links.take();
  for (uint64_t rk = 0; rk < racks; ++rk)
    for (uint64_t n = npr - spare; n < npr; ++n)
      for (uint64_t i = 0; i < cpn; ++i)
        c.spares.push_back(chip(rk, n, i));
  return {};
}

caf::error read_explicit(const reader& r, cluster_config& c) {
  if (auto err =
          r.expect_map({"kind", "hosts", "chips_per_host", "chips_per_node",
                        "links", "spares", "host_link"}))
    return err;
  LOCKSTEP_TRY(hosts, r.integer("hosts", 1, 1024));
  LOCKSTEP_TRY(cph, r.integer("chips_per_host", 1, 4096));
  set_hosts(c, std::vector<uint32_t>(hosts, static_cast<uint32_t>(cph)));
  c.chips_per_node = static_cast<uint32_t>(cph);
  if (r.has("chips_per_node")) {
    LOCKSTEP_TRY(cpn, r.integer("chips_per_node", 1, 4096));
    c.chips_per_node = static_cast<uint32_t>(cpn);
  }
  auto lr = r.sub("links");
  if (!lr.node() || !lr.node().IsSequence() || lr.node().size() == 0)
    return lr.error("", "expected a list of link rules");
  link_set links;
  for (size_t i = 0; i < lr.node().size(); ++i) {
    reader e{lr.node()[i], lr.join(std::to_string(i)), &r.file()};
    if (auto err = e.expect_map({"pattern", "chips", "profile"}))
      return err;
    LOCKSTEP_TRY(profile, profile_index(e, "profile", c));
    if (e.has("chips")) {
      auto list = e.child("chips");
      if (!list.IsSequence() || list.size() != 2)
        return e.error("chips", "expected two chip ids, e.g. [h0.c0, h1.c0]");
      uint32_t ends[2];
      for (int k = 0; k < 2; ++k) {
        auto ref = parse_chip_ref(list[k].as<std::string>(""));
        if (!ref)
          return e.error("chips", detail_of(ref.error()));
        auto flat = c.flat_chip(*ref);
        if (!flat)
          return e.error("chips",
                         detail_of(flat.error()) +
                             (ref->chip == transport::host_endpoint_chip
                                  ? " (host links come from host_link)"
                                  : ""));
        ends[k] = *flat;
      }
      if (ends[0] == ends[1])
        return e.error("chips", "a link needs two different chips");
      links.add(ends[0], ends[1], profile);
      continue;
    }
    LOCKSTEP_TRY(pattern, e.text("pattern"));
    if (pattern == "intra_host_full_mesh") {
      for (uint32_t h = 0; h < hosts; ++h)
        for (uint32_t a = 0; a < cph; ++a)
          for (uint32_t b = a + 1; b < cph; ++b)
            links.add(c.first_chip_of_host[h] + a, c.first_chip_of_host[h] + b,
                      profile);
    } else if (pattern == "inter_host_same_index") {
      for (uint32_t h = 0; h < hosts; ++h)
        for (uint32_t g = h + 1; g < hosts; ++g)
          for (uint32_t a = 0; a < cph; ++a)
            links.add(c.first_chip_of_host[h] + a, c.first_chip_of_host[g] + a,
                      profile);
    } else {
      return e.error("pattern", "'" + pattern +
                                    "' is not intra_host_full_mesh or "
                                    "inter_host_same_index");
    }
  }
  c.links = links.take();
  if (r.has("spares")) {
    auto list = r.child("spares");
    if (!list.IsSequence())
      return r.error("spares", "expected a list of chip ids");
    for (const auto& s : list) {
      auto ref = parse_chip_ref(s.as<std::string>(""));
      if (!ref)
        return r.error("spares", detail_of(ref.error()));
      auto flat = c.flat_chip(*ref);
      if (!flat)
        return r.error("spares", detail_of(flat.error()));
      c.spares.push_back(*flat);
    }
    std::sort(c.spares.begin(), c.spares.end());
    c.spares.erase(std::unique(c.spares.begin(), c.spares.end()),
                   c.spares.end());
  }
  return {};
}

caf::error check_ports(const cluster_config& c) {
  // Host links are PCIe-like (or in-process on local configs), not C2C:
  // they take no port.
  std::vector<uint32_t> degree(c.chip_count());
  for (const auto& l : c.links) {
    if (!c.is_chip_link(l))
      continue;
    ++degree[l.a];
    ++degree[l.b];
  }
  for (uint32_t i = 0; i < degree.size(); ++i)
    if (degree[i] > c.chip.c2c_ports)
      return caf::make_error(errc::invalid_config,
                             c.file +
                                 ": topology: ports over-subscribed: chip " +
                                 transport::to_string(c.ref(i)) + " has " +
                                 std::to_string(degree[i]) +
                                 " links but chip_profile.c2c_ports is " +
                                 std::to_string(c.chip.c2c_ports));
  return {};
}

// Every chip must reach every other over chip-to-chip links (host
// endpoints never relay), and the chips that may work must reach each other
// without relaying through spares (routes never do): otherwise the planner
// would fail much later with "no route". Two BFS over the chip graph:
// O(chips + links).
caf::error check_connected(const cluster_config& c, const reader& tr,
                           const reach_hint& hint) {
  uint32_t n = c.chip_count();
  std::vector<uint32_t> offsets(n + 1, 0);
  for (const auto& l : c.links)
    if (c.is_chip_link(l)) {
      ++offsets[l.a + 1];
      ++offsets[l.b + 1];
    }
  for (uint32_t v = 0; v < n; ++v)
    offsets[v + 1] += offsets[v];
  std::vector<uint32_t> adj(offsets[n]);
  auto fill = offsets;
  for (const auto& l : c.links)
    if (c.is_chip_link(l)) {
      adj[fill[l.a]++] = l.b;
      adj[fill[l.b]++] = l.a;
    }
  // Chips reached from `from` through chips for which relays(chip) holds.
  auto reach = [&](uint32_t from, auto relays) {
    std::vector<bool> seen(n, false);
    std::vector<uint32_t> queue{from};
    seen[from] = true;
    for (size_t i = 0; i < queue.size(); ++i) {
      uint32_t v = queue[i];
      if (v != from && !relays(v))
        continue;
      for (auto k = offsets[v]; k < offsets[v + 1]; ++k)
        if (!seen[adj[k]]) {
          seen[adj[k]] = true;
          queue.push_back(adj[k]);
        }
    }
    return seen;
  };
  auto name = [&](uint32_t chip) { return transport::to_string(c.ref(chip)); };
  auto all = reach(0, [](uint32_t) { return true; });
  for (uint32_t v = 0; v < n; ++v)
    if (!all[v])
      return tr.error("", "chip " + name(0) + " cannot reach " + name(v) +
                              " over chip-to-chip links (" + hint(0, v) + ")");
  std::vector<bool> spare(n, false);
  for (auto s : c.spares)
    spare[s] = true;
  uint32_t first = 0;
  while (first < n && spare[first])
    ++first;
  auto live = reach(first, [&](uint32_t v) { return !spare[v]; });
  for (uint32_t v = 0; v < n; ++v)
    if (!spare[v] && !live[v])
      return tr.error("", "chip " + name(first) + " reaches " + name(v) +
                              " only through spare chips, and routes never "
                              "relay through spares");
  return {};
}

} // namespace

caf::expected<cluster_config> parse_cluster_config(std::string_view yaml,
                                                   std::string file) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string{yaml});
  } catch (const YAML::Exception& e) {
    return caf::make_error(errc::invalid_config,
                           file + ": not valid YAML: " + e.what());
  }
  cluster_config c;
  c.file = std::move(file);
  reader r{root, "", &c.file};
  if (auto err = r.expect_map(
          {"name", "machine", "chip_profile", "link_profiles", "topology",
           "transport"}))
    return err;
  LOCKSTEP_TRY(name, r.text("name"));
  c.name = name;
  if (root["machine"]) {
    auto mr = r.sub("machine");
    if (auto err = mr.expect_map({"cores"}))
      return err;
    LOCKSTEP_TRY(cores, mr.integer("cores", 1, 4096));
    c.machine_cores = static_cast<uint32_t>(cores);
  }
  LOCKSTEP_TRY(chip, read_chip_profile(r.sub("chip_profile")));
  c.chip = chip;
  if (auto err = read_link_profiles(r.sub("link_profiles"), c))
    return err;
  auto tr = r.sub("topology");
  if (!tr.node() || !tr.node().IsMap())
    return tr.error("", "expected a mapping");
  LOCKSTEP_TRY(kind, tr.text("kind"));
  reach_hint hint;
  if (kind == "dragonfly") {
    if (auto err = read_dragonfly(tr, c, hint))
      return err;
  } else if (kind == "explicit") {
    if (auto err = read_explicit(tr, c))
      return err;
  } else {
    return tr.error("kind", "'" + kind + "' is not dragonfly or explicit");
  }
  // Required, like every hardware figure: the chip <-> host link carries
  // logits to the sampler and token ids back.
  LOCKSTEP_TRY(host_link, profile_index(tr, "host_link", c));
  c.host_link = host_link;
  if (auto err = check_ports(c))
    return err;
  if (c.spares.size() >= c.chip_count())
    return tr.error("", "every chip is a spare");
  if (auto err = check_connected(c, tr, hint))
    return err;
  // One link per chip to its host's endpoint, after every chip-to-chip link
  // so their ids do not change (a < b: host endpoints come after chips).
  c.links.reserve(c.links.size() + c.chip_count());
  for (uint32_t h = 0; h < c.host_count(); ++h)
    for (uint32_t i = 0; i < c.chips_per_host[h]; ++i)
      c.links.push_back(
          {c.first_chip_of_host[h] + i, c.host_node(h), c.host_link});
  auto settings =
      transport::parse_transport_settings(root["transport"], c.file);
  if (!settings)
    return settings.error();
  c.transport = *settings;
  return c;
}

caf::expected<cluster_config>
load_cluster_config(const std::filesystem::path& file) {
  std::ifstream in{file};
  if (!in)
    return caf::make_error(errc::invalid_config,
                           file.string() + ": cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_cluster_config(ss.str(), file.string());
}

std::string canonical_form(const cluster_config& c) {
  std::ostringstream os;
  os.precision(17);
  const auto& p = c.chip;
  os << "chip " << p.sram_bytes << ' ' << p.flops_f32 << ' ' << p.flops_f16
     << ' ' << p.flops_int8 << ' ' << p.sram_bytes_per_s << ' ' << p.c2c_ports
     << ' ' << p.op_overhead_ns << '\n';
  os << "machine_cores " << c.machine_cores << '\n';
  for (const auto& l : c.link_profiles)
    os << "profile " << l.bytes_per_s << ' ' << l.latency_ns << ' '
       << l.cpu_ns << '\n';
  os << "hosts";
  for (auto n : c.chips_per_host)
    os << ' ' << n;
  os << "\nnode " << c.chips_per_node << "\nhost_link " << int{c.host_link}
     << "\nlinks " << c.links.size() << '\n';
  for (const auto& l : c.links)
    os << l.a << ' ' << l.b << ' ' << int{l.profile} << '\n';
  os << "spares";
  for (auto s : c.spares)
    os << ' ' << s;
  os << "\nslot_ns " << c.transport.slot_ns << '\n';
  return os.str();
}

} // namespace lockstep::planner
