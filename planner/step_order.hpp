#pragma once

// When a step of a program is over everywhere. The cluster runs the decode
// and the prefill program on the same SRAM (their activations and windows
// overlap: chip_usage counts the larger of the two), one program's step at
// a time, and the head switches programs when it has run a step's last
// sample. That is only safe if nothing of the step is still running or in
// flight anywhere by then: every op and transfer must lead to a sample.

#include "planner/plan.hpp"

#include <caf/error.hpp>

namespace lockstep::planner {

/// Whether every op and transfer of `prog` is an ancestor of one of its
/// sample ops (through op inputs, same-node dependencies, transfer
/// producers and previous hops), so that a step whose samples have all run
/// has no op left to run and no byte left in flight on any node.
/// Errors: invalid_plan naming the first op or transfer that is not.
caf::error check_step_ends_at_samples(const step_program& prog);

} // namespace lockstep::planner
