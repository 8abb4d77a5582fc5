#include "actors/detail/programs.hpp"

#include "planner/step_order.hpp"

namespace lockstep::actors::detail {

bool runs_prefill(const planner::plan& p, bool paced) {
  return !paced && !p.prefill.ops.empty() &&
         !planner::check_step_ends_at_samples(p.decode) &&
         !planner::check_step_ends_at_samples(p.prefill);
}

} // namespace lockstep::actors::detail
