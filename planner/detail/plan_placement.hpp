#pragma once

// The decode program of one given placement, as make_plan builds it for
// each of its candidates: for tests that search placements exhaustively
// (tests/planner/lower_bound_test.cpp checks no placement beats the lower
// bound) and for experiments with placements the planner would not pick.

#include "planner/detail/placement.hpp"
#include "planner/planner.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <vector>

namespace lockstep::planner::detail {

/// The chips that may hold work, ascending: neither spares nor `failed`.
/// Errors: unknown_chip (a failed chip not in the config).
caf::expected<std::vector<uint32_t>>
available_chips(const cluster_config& config,
                const std::vector<uint32_t>& failed);

struct placed_plan {
  plan p;                      // decode program built; no prefill, no verdict
  bool fits = false;           // every chip's program fits its SRAM
  double token_latency_us = 0; // micro-batch 0's sample ends here
};

/// Errors: as make_plan's (invalid_argument, unknown_chip), and infeasible
/// when `pl` routes between chips that cannot reach each other.
/// REQUIRES: pl's chips are chips of `config` that are neither spares nor
/// in options.failed_chips, each layer group as long as pl.tp_degree.
caf::expected<placed_plan> plan_placement(const cluster_config& config,
                                          const model::model_spec& spec,
                                          const plan_options& options,
                                          const placement& pl);

} // namespace lockstep::planner::detail
