#pragma once

// Durations of compute ops and transfers from the chip and link profiles
// (the lower bound built from them: planner/lower_bound.hpp).
//
// Op time = max(bytes moved through SRAM / SRAM bandwidth,
//               FLOPs / peak FLOP/s of the weight dtype) + op overhead.
// Transfer time per hop = link latency + bytes / link bandwidth.

#include "model/model_spec.hpp"
#include "planner/cluster_config.hpp"

#include <cstdint>

namespace lockstep::planner {

struct op_cost {
  double bytes = 0; // SRAM traffic
  double flops = 0;
};

uint64_t op_duration_ns(const chip_profile& chip, model::dtype type,
                        const op_cost& cost);

uint64_t transfer_duration_ns(const link_profile& link, uint64_t bytes);

/// Peak FLOP/s for weights of `type`.
double peak_flops(const chip_profile& chip, model::dtype type);

/// Slots needed for `ns` (>= 1).
uint32_t to_slots(uint64_t ns, uint64_t slot_ns);

/// Core slots a transfer over `link` takes at each of its ends on a shared
/// machine (half its cpu_ns, rounded up); 0 if the profile has no cpu_ns.
uint32_t transfer_cpu_slots_per_end(const link_profile& link,
                                    uint64_t slot_ns);

} // namespace lockstep::planner
