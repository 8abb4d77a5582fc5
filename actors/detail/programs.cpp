#include "actors/detail/programs.hpp"

#include "planner/step_order.hpp"

namespace lockstep::actors::detail {

const char* to_string(prefill_policy p) {
  switch (p) {
  case prefill_policy::off:
    return "off";
  case prefill_policy::idle:
    return "idle";
  case prefill_policy::interleave:
    return "interleave";
  }
  return "?";
}

std::optional<prefill_policy> parse_prefill_policy(std::string_view name) {
  for (auto p : {prefill_policy::off, prefill_policy::idle,
                 prefill_policy::interleave})
    if (name == to_string(p))
      return p;
  return std::nullopt;
}

bool runs_prefill(const planner::plan& p, bool paced) {
  return !paced && !p.prefill.ops.empty() &&
         !planner::check_step_ends_at_samples(p.decode) &&
         !planner::check_step_ends_at_samples(p.prefill);
}

} // namespace lockstep::actors::detail
