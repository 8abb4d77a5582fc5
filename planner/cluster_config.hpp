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
// `flat = first_chip_of_host[h] + c`, written "h<h>.c<c>".

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
};

/// An undirected chip-to-chip link (usable in both directions).
struct link_spec {
  uint32_t a = 0; // flat chip ids, a < b
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
  std::vector<link_spec> links;
  std::vector<uint32_t> spares; // flat chip ids kept free for re-plans
  uint32_t chips_per_node = 0;  // locality unit (a fully connected node)
  transport::transport_settings transport;

  uint32_t chip_count() const {
    return first_chip_of_host.empty()
               ? 0
               : first_chip_of_host.back() + chips_per_host.back();
  }
  transport::chip_ref ref(uint32_t flat) const;
  /// Flat id of `c`; errors: unknown_chip.
  caf::expected<uint32_t> flat(transport::chip_ref c) const;
};

/// "h3.c5" -> {3, 5}. Errors: invalid_argument.
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
