#pragma once

// Turns a placement into a plan: shards, ops per chip, transfers per link
// (multi-hop routes store-and-forward through chips), slots from the cost
// model by list scheduling, and arena offsets with alternating buffers.

#include "planner/detail/placement.hpp"
#include "planner/plan.hpp"
#include "planner/topology.hpp"

#include <caf/expected.hpp>

namespace lockstep::planner::detail {

struct schedule_inputs {
  const model::model_spec* spec = nullptr;
  topology* topo = nullptr;
  const placement* place = nullptr;
  uint32_t batch = 1;         // sequences in the step
  uint32_t tokens = 1;        // tokens per sequence this step (1 = decode)
  uint32_t context = 0;       // KV positions read (worst case)
  uint32_t micro_batches = 1; // pipelined slices of the batch
};

/// Fills `out.shards`, `out.ops`, `out.transfers`, `out.usage`,
/// `out.slots_per_step`. Errors: infeasible (unreachable chips).
caf::error build_schedule(const schedule_inputs& in, plan& out);

} // namespace lockstep::planner::detail
