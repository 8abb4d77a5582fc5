#pragma once

// The `transport:` section of a cluster config. The cluster-config loader
// (planner/) hands this section to parse_transport_settings, so the transport
// owns the meaning of its own keys.
//
//   transport:
//     provider: shm            # libfabric provider: shm | "tcp;ofi_rxm" | verbs | efa
//     slot_mode: logical       # logical | paced
//     slot_us: 50              # paced slot length (also the planner's slot unit)
//     slot_ns: 100             # alternative to slot_us, for sub-us slots
//     hard_timeout_ms: 2000    # a delivery later than this fails the step

#include "transport/errc.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace YAML {
class Node;
}

namespace lockstep::transport {

enum class slot_mode : uint8_t {
  logical, // every chip runs its slot program in order; waits only for inputs
  paced,   // slots have a wall-clock length from a common epoch
};

const char* to_string(slot_mode mode);

struct transport_settings {
  std::string provider = "shm";
  slot_mode mode = slot_mode::logical;
  uint64_t slot_ns = 50'000;
  uint64_t hard_timeout_ns = 2'000'000'000;

  friend bool operator==(const transport_settings&,
                         const transport_settings&) = default;
};

/// Parses a `transport:` mapping. Errors name `file` and the key path
/// (e.g. "local-8.yaml: transport.slot_mode: expected logical or paced").
/// A missing (null) node yields the defaults.
caf::expected<transport_settings>
parse_transport_settings(const YAML::Node& node, std::string_view file);

} // namespace lockstep::transport
