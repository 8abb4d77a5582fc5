#pragma once

// The CPU cores a local cluster's chips share (cluster_config::
// machine_cores): busy intervals per core, in slots. The schedule builder
// books every op on a core as well as on its chip, so a plan never has more
// ops computing at once than the machine has cores — what really happens
// when 64 chip actors run on 2 cores, and what the plan's predicted latency
// must account for (docs/planner.md, "Chips that share a machine").
//
// Thread-safety: none (one builder owns one timeline).

#include <cstdint>
#include <utility>
#include <vector>

namespace lockstep::planner::detail {

class core_timeline {
public:
  /// A timeline with `cores` cores; 0 means unlimited (book() returns
  /// `ready` and records nothing).
  explicit core_timeline(uint32_t cores) : busy_(cores) {}

  /// The earliest start >= `ready` at which some core is free for
  /// `duration` slots, booked on the core free soonest (ties: lowest core).
  /// Gaps left between earlier bookings are used (ops are booked in build
  /// order, not start order).
  uint32_t book(uint32_t ready, uint32_t duration);

private:
  // Per core: disjoint [start, end) intervals sorted by start.
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> busy_;
};

} // namespace lockstep::planner::detail
