#pragma once

// One step of a plan's program (decode by default) as Chrome trace-event
// JSON (viewable in Perfetto / chrome://tracing): one track per node (chips
// and host endpoints) and one per link.

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <string>

namespace lockstep::planner {

std::string chrome_trace(const cluster_config& config, const plan& p,
                         program_kind kind = program_kind::decode);

} // namespace lockstep::planner
