#pragma once

// Placement: which chips hold which layers and shards. Layers are cut into
// groups of `layers_per_group` consecutive layers; each group lives on
// `tp_degree` chips (tensor parallel: heads and MLP rows split, reductions
// split on block boundaries). Groups take consecutive chips in flat
// (host-major, node-major) order so neighbouring layers sit on nearby chips;
// spares and failed chips are skipped.

#include "model/model_spec.hpp"
#include "planner/cluster_config.hpp"
#include "planner/topology.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <vector>

namespace lockstep::planner::detail {

struct placement {
  uint32_t tp_degree = 1;
  uint32_t layers_per_group = 1;
  bool aligned_splits = false; // MLP parts are canonical tree nodes
  double estimate_s = 0;       // estimated token latency (ranking only)
  std::vector<std::vector<uint32_t>> groups; // flat chip ids, [0] is root
  std::vector<uint32_t> embed_chips;         // column slices of the embedding
  std::vector<uint32_t> head_chips;          // row slices of the LM head
};

/// How a group's reductions are cut: `slices` chips per sub-group (one node)
/// each own a slice of the d_model vector; `subs` sub-groups combine in two
/// levels; the most tree nodes a part (`pieces`) or a sub-group
/// (`sub_pieces`) sends per element.
struct reduction_shape {
  uint32_t slices = 1;
  uint32_t subs = 1;
  uint64_t slice_bytes = 0; // largest slice, all rows of the batch, f32
  uint64_t pieces = 1;
  uint64_t sub_pieces = 1;
};
reduction_shape reduction_shape_of(const model::model_spec& spec,
                                   uint32_t batch, uint32_t tp_degree,
                                   uint32_t chips_per_node, bool aligned);

/// Bytes of SRAM a chip of a group of `tp_degree` holding `layers` layers
/// keeps for receive/send arenas (both buffers), for `batch` sequences.
uint64_t arena_reserve_bytes(const model::model_spec& spec, uint32_t batch,
                             uint32_t tp_degree, uint32_t layers,
                             uint32_t chips_per_node, bool aligned);

/// Per-chip bytes of one layer's shards + KV cache at tensor parallelism k.
uint64_t layer_chip_bytes(const model::model_spec& spec, uint32_t batch,
                          uint32_t context, uint32_t k, bool aligned);

/// Placements that fit by estimate, best estimated latency first: one per
/// tensor-parallel degree, chips assigned from `available` (sorted). The
/// caller builds them in order and keeps the first whose exact schedule fits
/// every chip's SRAM. `topo` (of `config`) says which chips are linked.
/// Errors: infeasible, saying what does not fit.
caf::expected<std::vector<placement>>
place_candidates(const model::model_spec& spec, const cluster_config& config,
                 const topology& topo, uint32_t batch, uint32_t context,
                 const std::vector<uint32_t>& available);

/// Where decode's final norm runs: on real chips the first LM-head chip
/// (x crosses to it as its slices); on a shared machine (every transfer
/// costs CPU), or without head chips, the last group's first chip, where
/// prefill's always runs. Both hold its weights.
inline uint32_t decode_norm_chip(const placement& pl,
                                 const cluster_config& config) {
  return pl.head_chips.empty() || config.machine_cores > 0
             ? pl.groups.back()[0]
             : pl.head_chips.front();
}

/// Heads [first, end) of chip i of k (may be empty). `aligned`: each
/// chip's heads are one canonical tree node of q_dim's blocks when that is
/// a whole number of heads; otherwise heads are split evenly.
std::pair<uint32_t, uint32_t> head_range(const model::model_spec& spec,
                                         uint32_t k, uint32_t i, bool aligned);
/// Reduction blocks [first, end) that chip i of k computes of the attention
/// output (its heads' blocks of q_dim) or of the MLP down projection.
std::pair<uint32_t, uint32_t> part_blocks(const model::model_spec& spec,
                                          uint32_t k, uint32_t i, bool aligned,
                                          bool attention);
/// Reduction blocks [first, end) of a dimension of `dim` elements, part i of
/// k (block boundaries; k may exceed the block count only if parts repeat).
std::pair<uint32_t, uint32_t> block_range(uint32_t dim, uint32_t k,
                                          uint32_t i, bool aligned);

} // namespace lockstep::planner::detail
