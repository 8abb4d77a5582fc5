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

#include <optional>
#include <string_view>

namespace lockstep::actors::detail {

/// When a cluster that runs the prefill program uses it (`lockstep up
/// --prefill`). A chunk step computes all its rows at once; on chips that
/// share a machine's CPU cores it costs ~2-10x a decode step (local-64:
/// ~40 ms with one row, ~190 ms with 32, a decode step ~20 ms), so running
/// one between two decode steps stretches the gap between those requests'
/// tokens by that much.
enum class prefill_policy : uint8_t {
  /// Prompts always ride decode steps, a token a step.
  off,
  /// Prompts go through prefill chunks while no request generates (a lone
  /// prompt, or one of at least a chunk); while others generate they ride
  /// the decode steps, so no request's token gap grows. The default.
  idle,
  /// Prefill chunks alternate with decode steps: a long prompt's first
  /// token comes sooner, the others' gaps grow by a chunk step meanwhile.
  interleave,
};

const char* to_string(prefill_policy p);
std::optional<prefill_policy> parse_prefill_policy(std::string_view name);

/// Whether the cluster runs `p`'s prefill program. Every host and the
/// coordinator decide this alike from the same plan and slot mode.
bool runs_prefill(const planner::plan& p, bool paced);

} // namespace lockstep::actors::detail
