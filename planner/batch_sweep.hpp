#pragma once

// How many sequences a plan can serve: plans of one (model, cluster,
// context) at batch 1, 2, 4, ... and the largest batch that fits (the
// latency/throughput curve an operator picks a point from).
// `lockstep plan --sweep-batch`, `predicted.max_batch` of `plan -o json`
// and the planner bench all take their figures from here.

#include "planner/planner.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <vector>

namespace lockstep::planner {

/// make_plan's own limit on --batch.
inline constexpr uint32_t max_plan_batch = 4096;

struct batch_point {
  uint32_t batch = 0;
  plan_result result;
};

struct batch_sweep {
  std::vector<batch_point> points; // powers of two that fit, then the largest
  uint32_t max_batch = 0;          // 0: not even `from` fits
  bool at_limit = false;           // max_batch is max_plan_batch
};

/// Plans at `from`, 2·from, 4·from, ... until one does not fit (errc::
/// infeasible), then bisects to the largest batch that fits. With
/// `keep_points` the plans are kept (verified); without, they are probes
/// only (not verified, dropped). `options.batch` is ignored.
/// Errors: make_plan's other than infeasible.
/// REQUIRES: 1 <= from <= max_plan_batch.
caf::expected<batch_sweep> sweep_batch(const cluster_config& config,
                                       const model::model_spec& spec,
                                       plan_options options, uint32_t from,
                                       bool keep_points);

/// The largest batch (<= max_plan_batch) at which the placement's estimate
/// finds a candidate that fits (detail::place_candidates): milliseconds, no
/// schedule built. It can only overstate what exact plans fit (the exact
/// schedule may overflow where the estimate fit), never understate: the
/// planner considers no candidate the estimate rejects. 0: none at batch 1.
uint32_t estimated_max_batch(const cluster_config& config,
                             const model::model_spec& spec,
                             const plan_options& options);

} // namespace lockstep::planner
