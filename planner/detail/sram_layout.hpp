#pragma once

// Where everything lives in a chip's SRAM. A chip's memory is
//
//   [ weight shards | KV slices | program: activations | scratch | send | recv ]
//   0                           static_end
//
// Shards and KV slices are placed once per plan and shared by both
// programs; each program (decode, prefill) lays out its own dynamic part
// from static_end, since the two never run at once. Host endpoints have no
// weights: their programs start at 0 (host memory, not SRAM).
//
// Activations an op writes for later ops of its own node share space when
// their lifetimes (producer start to last reader end, in slots) do not
// overlap: a first fit over (time, space). Outputs that transfers carry live
// in the transfers' shared send window (the transport sends them in place);
// every transfer gets two receive windows, alternating by step parity.

#include "planner/detail/placement.hpp"
#include "planner/plan.hpp"

#include <cstdint>
#include <vector>

namespace lockstep::planner::detail {

/// SRAM alignment of shards, KV slices and activation buffers (a cache
/// line); windows are 8-aligned as the transport requires.
inline constexpr uint64_t sram_align = 64;

/// Places the shards and KV slices of placement `pl` (batch sequences of
/// `context` positions) on their chips at SRAM offsets: fills
/// `out.shards`, `out.kv_slices`, `out.usage` (weights, KV) for
/// every node of `config` and `out.chips_used`'s shard holders.
void place_static(const model::model_spec& spec, const placement& pl,
                  uint32_t batch, uint32_t context,
                  const cluster_config& config, plan& out);

/// First SRAM byte after a node's shards and KV slices.
std::vector<uint64_t> static_ends(const plan& p, uint32_t node_count);

/// Assigns every buffer of `prog` (built by build_schedule): operand and
/// scratch offsets, send and receive windows, and `prog.arenas`. Records
/// the program's bytes per node in `p.usage`.
void layout_program(plan& p, step_program& prog, uint32_t node_count);

} // namespace lockstep::planner::detail
