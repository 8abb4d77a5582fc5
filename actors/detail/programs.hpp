#pragma once

// Which of a plan's programs a cluster runs. Decode always. Prompts go
// through the prefill program, in chunks of `plan.prefill.tokens` rows,
// interleaved with decode steps (the coordinator switches at step
// boundaries) — unless the slots are paced: each program's slot clock
// runs from its own epoch, and switching clocks at every chunk would need
// a re-anchoring (Resume) round through every host per switch; paced
// clusters feed prompts one token per decode step instead (the same bits:
// docs/determinism.md). The programs share each chip's SRAM, so a switch
// is only safe when a step is over everywhere once its samples have run
// (planner/step_order.hpp); a plan whose programs do not end so is served
// through decode alone.

#include "planner/plan.hpp"

namespace lockstep::actors::detail {

/// Whether the cluster runs `p`'s prefill program. Every host and the
/// coordinator decide this alike from the same plan and slot mode.
bool runs_prefill(const planner::plan& p, bool paced);

} // namespace lockstep::actors::detail
