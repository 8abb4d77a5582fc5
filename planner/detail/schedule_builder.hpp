#pragma once

// Turns a placement into one step program: ops per node with their inputs,
// outputs, weights and KV slice, transfers per link (multi-hop routes
// store-and-forward through chips), slots from the cost model by list
// scheduling. SRAM offsets come afterwards (sram_layout.hpp): the builder
// says what every buffer is, the layout says where it lives.

#include "planner/detail/placement.hpp"
#include "planner/plan.hpp"
#include "planner/topology.hpp"

#include <caf/expected.hpp>

namespace lockstep::planner::detail {

struct schedule_inputs {
  const model::model_spec* spec = nullptr;
  topology* topo = nullptr;
  const placement* place = nullptr;
  const plan* placed = nullptr; // its shards and kv_slices are referenced
  program_kind kind = program_kind::decode;
  uint32_t batch = 1;         // sequences in a step (prefill: 1)
  uint32_t tokens = 1;        // rows per sequence (decode 1; prefill chunk)
  uint32_t context = 0;       // KV positions per sequence
  uint32_t micro_batches = 1; // pipelined slices of the batch
  uint32_t sampler = 0;       // node of the head host's endpoint
  // Nonzero: the caller only wants a step shorter than this many slots
  // (the best candidate so far); the build stops at the first op or
  // transfer that ends at or after it.
  uint32_t stop_at_slot = 0;
};

/// Fills `out` except its memory (operand offsets, windows, arenas) and
/// period. Returns false if it stopped early (in.stop_at_slot): `out` is
/// then incomplete and its step would be at least that long. Errors:
/// infeasible (unreachable nodes).
caf::expected<bool> build_schedule(const schedule_inputs& in,
                                   step_program& out);

} // namespace lockstep::planner::detail
