#pragma once

// The lower bound on one token's decode latency: what no plan of `spec` on
// `config` can beat, whatever its schedule, under the cost model
// (planner/cost_model.hpp) and lockstep's placement rules (a layer lives on
// k chips that split its heads and MLP rows; docs/planner.md, "The lower
// bound", gives the formula and the argument).
//
// It is topology-aware: SRAM forces each layer onto at least k_min chips,
// k chips can be no closer than the chip graph allows (detail/chip_reach),
// and each reduction then crosses that many hops, one op between hops, and
// moves its bytes; compute is split k ways, KV replicated when k exceeds
// the kv heads. The bound takes the best k for the layers. Every term is
// rounded up to whole slots as the schedule's durations are.

#include "model/model_spec.hpp"
#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <cstdint>
#include <vector>

namespace lockstep::planner {

/// Where the bound's time goes (µs; `rounding_us` is the whole-slot
/// rounding of all terms together).
struct bound_terms {
  double compute_us = 0;
  double op_overhead_us = 0;
  double link_latency_us = 0;
  double link_bytes_us = 0;
  double rounding_us = 0;
  double total_us() const {
    return compute_us + op_overhead_us + link_latency_us + link_bytes_us +
           rounding_us;
  }
};

struct token_bound {
  double total_us = 0;         // the bound
  bound_terms terms;           // its chain, term by term (sums to chain_us)
  double chain_us = 0;         // the dependency chain of one token
  double shared_work_us = 0;   // on a shared machine: all ops' work / cores
  uint32_t min_tp_degree = 1;  // SRAM forces layers onto >= this many chips
  uint32_t tp_degree = 1;      // the k of the bound's split layers
  uint32_t split_layers = 0;   // layers the bound splits (others: 1 chip)
  uint32_t reduce_hops = 0;    // attention -> MLP at tp_degree, at least
  uint32_t handoff_hops = 0;   // MLP -> next layer at tp_degree, at least
  uint32_t clique = 0;         // largest clique of usable chips
  uint64_t diameter2_set = 0;  // most usable chips within 2 hops of each
                               // other (detail::chip_reach)
};

/// The bound for `batch` sequences at `context` tokens (SRAM holds all of
/// their KV; the latency is one sequence's), on the chips of `config` that
/// are not `unusable` (spares, failed chips).
/// REQUIRES: model::validate(spec), batch >= 1, context >= 1.
token_bound token_latency_bound(const cluster_config& config,
                                const model::model_spec& spec, uint32_t batch,
                                uint32_t context,
                                const std::vector<uint32_t>& unusable);

/// The bound for `p`'s model, batch and context on `config` without p's
/// spares and failed chips (what p.predicted reports).
token_bound token_latency_bound(const cluster_config& config, const plan& p);

} // namespace lockstep::planner
