#pragma once

// One decode step of a plan as Chrome trace-event JSON (viewable in
// Perfetto / chrome://tracing): one track per chip and one per link.

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <string>

namespace lockstep::planner {

std::string chrome_trace(const cluster_config& config, const plan& p);

} // namespace lockstep::planner
