#pragma once

// The planner's front door: (model, cluster, batch, context) -> a verified
// plan with predictions; and the incremental re-plan around a failed chip.
//
// Deterministic: the same inputs give byte-identical plans (no hash-map
// iteration order, no clocks, no randomness in any decision).

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"
#include "planner/verifier.hpp"

#include <caf/expected.hpp>

#include <vector>

namespace lockstep::planner {

struct plan_options {
  uint32_t batch = 1;
  uint32_t context = 0;               // 0: the model's max_context
  std::vector<uint32_t> failed_chips; // flat ids
  bool verify = true; // false: skip the verifier (the verdict stays empty;
                      // for probes that only ask whether a plan fits)
};

struct plan_result {
  plan p;
  verify_report verdict;
};

/// Places, schedules, predicts and verifies.
/// Errors: invalid_argument (batch/context), infeasible (does not fit).
/// Predicted time to the first token of a `prompt_tokens`-token prompt run
/// through `p`'s prefill program: its chunks enter one period apart and the
/// last one's sample ends it. REQUIRES: p's prefill program is built.
double predicted_ttft_ms(const plan& p, uint32_t prompt_tokens);

/// Predicted time to the first token of a `prompt_tokens`-token prompt as a
/// cluster runs it beside requests that decode: its chunks one at a time,
/// each a whole prefill step, with a decode step after each but the last
/// (actors/detail/request_slots.hpp). REQUIRES: p's programs are built.
double predicted_interleaved_ttft_ms(const plan& p, uint32_t prompt_tokens);

caf::expected<plan_result> make_plan(const cluster_config& config,
                                     const model::model_spec& spec,
                                     const plan_options& options);

struct replan_result {
  plan_result result;
  uint32_t failed = 0;
  uint32_t replacement = 0; // the spare that took over (== failed if unused)
  size_t moved_shards = 0;
  uint64_t moved_bytes = 0;
};

/// Moves only the failed chip's work onto the nearest free spare (fewest
/// hops), keeps every other placement decision, reschedules and
/// re-verifies. Errors: unknown_chip, infeasible (no spare left).
caf::expected<replan_result> replan(const cluster_config& config,
                                    const plan& base, uint32_t failed_chip);

} // namespace lockstep::planner
