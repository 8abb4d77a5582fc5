#pragma once

// Where one token's latency goes: the chain of ops and transfers of the
// decode program that ends at micro-batch 0's sample (the token loop), walked back through whichever input (or
// busy chip or link) set each start, and summed by what the time was spent
// on. Explains `latency / lower bound` (docs/planner.md).

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <cstdint>
#include <vector>

namespace lockstep::planner {

/// One op or transfer of the critical path (an id into the decode
/// program's ops or transfers).
struct critical_step {
  bool is_op = true;
  uint32_t id = 0;
};

struct critical_path {
  double compute_us = 0;      // ops: max(SRAM bytes, FLOPs) time
  double op_overhead_us = 0;  // ops: the profile's fixed op overhead
  double link_latency_us = 0; // transfers: per-hop latency
  double link_bytes_us = 0;   // transfers: bytes / bandwidth
  double rounding_us = 0;     // ops and transfers rounded up to whole slots
  double waiting_us = 0;      // idle gaps: none in a list schedule, but on a
                              // shared machine an op may wait for a core
                              // that a transfer's CPU (cpu_ns) holds
  uint32_t ops = 0;           // ops on the path
  uint32_t hops = 0;          // transfers on the path
  uint32_t compute_ops = 0;   // attention/mlp/lm_head ops on the path
  std::vector<critical_step> steps; // the path, first to last
  double total_us() const {
    return compute_us + op_overhead_us + link_latency_us + link_bytes_us +
           rounding_us + waiting_us;
  }
};

/// The critical path of micro-batch 0's token in `p` (a plan built for
/// `config`). Zero if the plan has no sample.
critical_path critical_path_of(const plan& p, const cluster_config& config);

/// The compute time one decode step asks of the chips (host endpoints'
/// ops not included), summed over their ops: on a machine whose chips
/// share `machine_cores` cores, a step takes at least this / cores.
/// scripts/calibrate-local.sh compares `kernel_us` with the kernel CPU a
/// running cluster measures.
struct step_work {
  double kernel_us = 0;       // max(SRAM bytes, FLOPs) time
  double op_overhead_us = 0;  // the profile's fixed op overhead
  double transfer_cpu_us = 0; // link profiles' cpu_ns (machine_cores > 0)
  uint32_t ops = 0;
  uint32_t cpu_transfers = 0; // transfers on links with a cpu_ns
};
step_work step_work_of(const plan& p, const cluster_config& config);

} // namespace lockstep::planner
