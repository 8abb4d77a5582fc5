#pragma once

// The determinism rule (docs/determinism.md, version 1) as code: the fixed
// reduction block, and the canonical tree in which partial sums over blocks
// are combined. Kernels, the planner and the planner's verifier all use these
// definitions; changing any of them changes results and must bump
// `determinism_rule_version`.

#include <cstdint>
#include <span>
#include <vector>

namespace lockstep::model {

/// Version of the rule in docs/determinism.md. Part of every plan's cache key.
inline constexpr uint32_t determinism_rule_version = 1;

/// Elements of one reduction block. Reduction dimensions are whole numbers of
/// blocks; a split along a reduction dimension falls on a block boundary.
inline constexpr uint32_t reduction_block_elems = 64;

/// Accumulator lanes inside a block: element j of a block goes to lane j % 8.
inline constexpr uint32_t block_lanes = 8;

/// Number of blocks of a reduction of `elems` elements (rounded up; a partial
/// last block is summed as if padded with nothing — only lanes that have
/// elements contribute).
constexpr uint32_t blocks_of(uint64_t elems) {
  return static_cast<uint32_t>((elems + reduction_block_elems - 1) /
                               reduction_block_elems);
}

/// A node of the canonical combine tree: blocks [first, first + count) of a
/// reduction with `n_blocks` blocks, count a power of two, first % count == 0.
/// The node's value is its left child plus its right child, where a child
/// that starts at or beyond n_blocks is absent (the node equals its left
/// child). Leaves (count 1) are block partials.
struct tree_node {
  uint32_t first = 0;
  uint32_t count = 0;
  friend bool operator==(const tree_node&, const tree_node&) = default;
};

/// Smallest power of two >= n (1 for n == 0): the root's `count`.
uint32_t tree_span(uint32_t n_blocks);

/// Splits the block range [begin, end) of a reduction with `n_blocks` blocks
/// into the maximal tree nodes it covers, left to right. A part of a split
/// reduction computes exactly these nodes, one partial value each; a range
/// aligned to a power of two yields a single node.
/// REQUIRES: begin < end <= n_blocks.
std::vector<tree_node> canonical_pieces(uint32_t n_blocks, uint32_t begin,
                                        uint32_t end);

/// Sums block partials `p[0..n)` — the blocks [first, first + n) of one tree
/// node whose first block is aligned — in place, in canonical tree order, and
/// returns the node's value. `p` is clobbered.
float tree_reduce_in_place(std::span<float> p);

/// Combines node values that together cover all `n_blocks` blocks (in any
/// order) into the root value, in canonical tree order.
/// REQUIRES: `nodes` partition [0, n_blocks) into tree nodes; values[i] is the
/// value of nodes[i].
float combine_nodes(uint32_t n_blocks, std::span<const tree_node> nodes,
                    std::span<const float> values);

/// The value of tree node `target` from node values that partition its
/// blocks, in canonical tree order: a hierarchical reduction (combine each
/// node's pieces first, the pieces later) gives the same bits as
/// `combine_nodes` on all of them at once.
/// REQUIRES: `nodes` partition target's blocks (within n_blocks) into tree
/// nodes nested in `target`; values[i] is the value of nodes[i].
float combine_into(uint32_t n_blocks, tree_node target,
                   std::span<const tree_node> nodes,
                   std::span<const float> values);

} // namespace lockstep::model
