#pragma once

// The independent verifier. It shares no scheduling code with the builder:
// it re-derives every constraint from the plan, the cluster config and the
// model spec alone, so a bug in the scheduler cannot hide itself. The
// runtime refuses any plan it rejects.
//
// Checks: capacity (SRAM per chip), conflicts (one op per chip and one
// transfer per link at a time), dependencies (with link latency), routes
// (hop continuity), arenas (windows in range and disjoint; alternating
// buffers never overwritten before their consumer ran), coverage (every
// weight placed exactly once), spares and failed chips left alone, and the
// determinism rule (reduction splits on block boundaries, combined as the
// canonical tree).

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <set>
#include <string>
#include <vector>

namespace lockstep::planner {

struct verify_report {
  /// Each "<rule>: <what>", naming op, link, chip or slot; rules are
  /// listed in docs/planner.md ("The verifier").
  /// (At most the limit verify_plan was given.)
  std::vector<std::string> violations;
  /// Every rule that fired, also those whose messages the limit cut.
  std::set<std::string> fired;
  bool ok() const { return fired.empty(); }
  /// The rules that fired.
  std::set<std::string> rules() const { return fired; }
};

/// Verifies `p` against `config`; reports at most `max_violations`.
verify_report verify_plan(const plan& p, const cluster_config& config,
                          size_t max_violations = 50);

} // namespace lockstep::planner
