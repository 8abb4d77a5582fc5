#pragma once

// How often a step program may start a new step while earlier ones are
// still running: its period (initiation interval) in slots. Prefill chunks
// of a prompt are independent apart from the KV cache, so chunk c+1 enters
// the first layer group while chunk c is in the second — if the program's
// resources and buffers allow it at that period:
//
// - no node runs two ops at once and no link carries two transfers at once
//   when every step's slots repeat one period later (checked by folding
//   them onto one period);
// - the ops of a chip that keep activations in its SRAM (all but relays,
//   which only copy a receive window into a send window) fit inside one
//   period, so a chip's local buffers, scratch and KV appends (chunk
//   order) of step k are done before step k+1's begin — the SRAM layout
//   reuses space under exactly that assumption;
// - a send window is not rewritten (next step's producer start) before its
//   transfers of this step end: transfer end <= producer start + period;
// - a receive window (two, by step parity) is not rewritten before its
//   reader ends: reader end <= transfer start + 2 * period.
//
// Decode steps depend on each other through the token loop: their period is
// the program's length.

#include "planner/plan.hpp"

#include <cstdint>
#include <utility>
#include <vector>

namespace lockstep::planner::detail {

/// The smallest period satisfying the rules above (at most the program's
/// length, which always does), for a program whose nodes below
/// `chip_count` are chips and the rest host endpoints.
uint32_t pipeline_period(const step_program& prog, uint32_t chip_count);

/// Whether intervals [start, start + duration) repeated every `period`
/// slots overlap each other (or themselves).
bool overlaps_modulo(const std::vector<std::pair<uint32_t, uint32_t>>& intervals,
                     uint32_t period);

} // namespace lockstep::planner::detail
