#pragma once

// Cluster configs (cluster_configs/*.yaml): hosts, chips, the chip profile,
// link profiles, the topology (explicit or generated), spares, and the
// transport's section. One loader for the whole file: the transport reads its
// settings from the result.
//
// Hardware figures live in the YAML files only; this code has no defaults
// for them, so a config that omits one is an error, not a silent guess.
//
// Chips are numbered flat, host-major: chip c of host h is
// `flat = first_chip_of_host[h] + c`, written "h<h>.c<c>". Each host also
// has an endpoint (its own process: the sampler that turns logits into
// token ids), written "h<h>.host". Host endpoints are nodes numbered after
// all chips (`host_node(h) = chip_count() + h`), so chip ids, and every
// array sized by chip_count(), are unchanged by them.

#include "planner/errc.hpp"
#include "transport/slot_program.hpp"
#include "transport/transport_settings.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::planner {

struct chip_profile {
  std::string name;
  uint64_t sram_bytes = 0;
  double flops_f32 = 0; // peak FLOP/s by weight dtype
  double flops_f16 = 0; // also used for bf16
  double flops_int8 = 0;
  double sram_bytes_per_s = 0;
  uint32_t c2c_ports = 0;
  uint64_t op_overhead_ns = 0; // fixed cost of starting any compute op
};

struct link_profile {
  std::string name;
  double bytes_per_s = 0;
  uint64_t latency_ns = 0;
  /// CPU time one transfer costs the machine's cores besides the chips'
  /// own (progress threads posting and reaping it); optional, used only with
  /// machine_cores > 0 (a local cluster's cross-process links).
  uint64_t cpu_ns = 0;
};

/// An undirected link (usable in both directions): chip to chip, or a chip
/// to its host's endpoint (host links come after all chip-to-chip links).
struct link_spec {
  uint32_t a = 0; // node ids, a < b (a host endpoint is always b)
  uint32_t b = 0;
  uint8_t profile = 0; // index into cluster_config::link_profiles
};

struct cluster_config {
  std::string name;
  std::string file; // where it was loaded from (for errors)
  chip_profile chip;
  std::vector<link_profile> link_profiles;
  std::vector<uint32_t> chips_per_host;
  std::vector<uint32_t> first_chip_of_host; // prefix sums
  /// Chip-to-chip links, then one link per chip to its host's endpoint
  /// (chip order), all with profile `host_link`.
  std::vector<link_spec> links;
  uint8_t host_link = 0;        // index into link_profiles: chip <-> host
  std::vector<uint32_t> spares; // flat chip ids kept free for re-plans
  uint32_t chips_per_node = 0;  // locality unit (a fully connected node)
  /// 0: every chip computes on hardware of its own (real chips). N > 0: all
  /// chips of the config run on one machine's N CPU cores (local clusters),
  /// so at most N compute at once; the chip profile's figures are then one
  /// core's, measured while every core works (scripts/calibrate-local.sh).
  uint32_t machine_cores = 0;
  transport::transport_settings transport;

  uint32_t chip_count() const {
    return first_chip_of_host.empty()
               ? 0
               : first_chip_of_host.back() + chips_per_host.back();
  }
  uint32_t host_count() const {
    return static_cast<uint32_t>(chips_per_host.size());
  }
  /// Chips and host endpoints.
  uint32_t node_count() const { return chip_count() + host_count(); }
  /// The node of host `host`'s endpoint. REQUIRES: host < host_count().
  uint32_t host_node(uint32_t host) const { return chip_count() + host; }
  bool is_host_node(uint32_t node) const {
    return node >= chip_count() && node < node_count();
  }
  /// REQUIRES: is_host_node(node).
  uint32_t host_of_node(uint32_t node) const { return node - chip_count(); }
  /// Whether `l` joins two chips (not a chip and a host endpoint).
  bool is_chip_link(const link_spec& l) const { return !is_host_node(l.b); }

  /// {h, c} of a chip, {h, host_endpoint_chip} of a host endpoint.
  /// REQUIRES: node < node_count().
  transport::chip_ref ref(uint32_t node) const;
  /// Node id of `c` (a chip or a host endpoint); errors: unknown_chip.
  caf::expected<uint32_t> flat(transport::chip_ref c) const;
  /// Flat id of chip `c`; errors: unknown_chip (also for a host endpoint,
  /// where only a chip makes sense: spares, failed chips, placements).
  caf::expected<uint32_t> flat_chip(transport::chip_ref c) const;
};

/// "h3.c5" -> {3, 5}; "h3.host" -> {3, host_endpoint_chip}.
/// Errors: invalid_argument.
caf::expected<transport::chip_ref> parse_chip_ref(std::string_view text);

/// Loads and validates a config file. Errors name the file and the key path.
caf::expected<cluster_config>
load_cluster_config(const std::filesystem::path& file);

/// Same, from YAML text (`file` is used in errors).
caf::expected<cluster_config> parse_cluster_config(std::string_view yaml,
                                                   std::string file);

/// A canonical text form of everything that affects a plan (for plan hashes):
/// the same config written differently gives the same string.
std::string canonical_form(const cluster_config& c);

} // namespace lockstep::planner
