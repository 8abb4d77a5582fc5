#pragma once

// How often a step program may start a new step while earlier ones are
// still running: its period (initiation interval) in slots. Prefill chunks
// of a prompt are independent apart from the KV cache, so chunk c+1 enters
// the first layer group while chunk c is in the second — if the program's
// resources and buffers allow it at that period:
//
// - every chip's ops of one step fit inside one period (its span), so a
//   chip finishes step k before it starts step k+1: its local buffers, its
//   scratch and its KV appends (chunk order) are never raced;
// - every link's transfers of one step fit inside one period;
// - a send window is not rewritten (next step's producer start) before its
//   transfers of this step end: transfer end <= producer start + period;
// - a receive window (two, by step parity) is not rewritten before its
//   reader ends: reader end <= transfer start + 2 * period;
// - the sampler host's ops (feed at the start, sample at the end) do not
//   overlap modulo the period.
//
// Decode steps depend on each other through the token loop: their period is
// the program's length.

#include "planner/plan.hpp"

#include <cstdint>

namespace lockstep::planner::detail {

/// The smallest period satisfying the rules above (at most the program's
/// length, which always does), for a program whose nodes below
/// `chip_count` are chips and the rest host endpoints.
uint32_t pipeline_period(const step_program& prog, uint32_t chip_count);

/// Whether intervals [start, start + duration) repeated every `period`
/// slots overlap each other (or themselves).
bool overlaps_modulo(std::vector<std::pair<uint32_t, uint32_t>> intervals,
                     uint32_t period);

} // namespace lockstep::planner::detail
