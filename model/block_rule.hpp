#pragma once

// The determinism rule (docs/determinism.md, version 1) as code: the fixed
// reduction block, and the canonical tree in which partial sums over blocks
// are combined. Kernels, the planner and the planner's verifier all use these
// definitions; changing any of them changes results and must bump
// `determinism_rule_version`.

#include "model/errc.hpp"

#include <caf/expected.hpp>

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

/// Most blocks a reduction may have (2^31: its tree span fits 32 bits).
inline constexpr uint32_t max_blocks = 0x80000000u;

/// Smallest power of two >= n (1 for n == 0): the root's `count`.
/// REQUIRES: n_blocks <= max_blocks (larger values give max_blocks).
uint32_t tree_span(uint32_t n_blocks);

/// Splits the block range [begin, end) of a reduction with `n_blocks` blocks
/// into the maximal tree nodes it covers, left to right. A part of a split
/// reduction computes exactly these nodes, one partial value each; a range
/// aligned to a power of two yields a single node. A range that is empty or
/// not inside [0, n_blocks) (plans and the wire can say anything) yields
/// no nodes.
std::vector<tree_node> canonical_pieces(uint32_t n_blocks, uint32_t begin,
                                        uint32_t end);

/// Sums block partials `p[0..n)` — the blocks [first, first + n) of one tree
/// node whose first block is aligned — in place, in canonical tree order, and
/// returns the node's value. `p` is clobbered.
float tree_reduce_in_place(std::span<float> p);

/// How the node values held by the parts of a split reduction combine, in
/// canonical tree order, into the root (a root combine) or into the maximal
/// tree nodes of the parts' block range (a partial combine, whose outputs a
/// root combine elsewhere consumes as one part). Compiled once from the
/// input nodes, which it validates — in every build type, since they come
/// from plans and the wire — and then evaluated per element with no search
/// and no recursion.
class combine_rule {
public:
  /// `inputs`: the tree nodes whose values arrive, in the order they are
  /// passed to eval. Root: they must partition [0, n_blocks). Partial
  /// (`root == false`): they must partition a contiguous range [b0, b1);
  /// the outputs are canonical_pieces(n_blocks, b0, b1).
  /// Errors: model::errc::invalid_split naming the offending node or the
  /// uncovered block (not a tree node, overlapping, gap, outside the
  /// reduction).
  static caf::expected<combine_rule> make(uint32_t n_blocks,
                                          std::span<const tree_node> inputs,
                                          bool root = true);

  uint32_t n_blocks() const noexcept { return n_blocks_; }
  size_t inputs() const noexcept { return n_inputs_; }
  /// Output nodes, in order (the root alone for a root combine).
  const std::vector<tree_node>& outputs() const noexcept { return outputs_; }

  /// out[o] for o < outputs().size() from in[i] for i < inputs().
  /// `scratch` holds at least scratch_size() floats.
  void eval(const float* in, float* out, float* scratch) const;
  size_t scratch_size() const noexcept { return n_inputs_ + adds_.size(); }

private:
  struct add {
    uint32_t left, right; // value slots; slot i < inputs is input i
  };
  uint32_t n_blocks_ = 0;
  size_t n_inputs_ = 0;
  std::vector<add> adds_;           // slot inputs + k = adds_[k] evaluated
  std::vector<uint32_t> out_slots_; // per output node
  std::vector<tree_node> outputs_;
};

/// Combines node values that together cover all `n_blocks` blocks (in any
/// order) into the root value, in canonical tree order.
/// Errors: invalid_split when `nodes` do not partition [0, n_blocks) into
/// tree nodes, or sizes differ.
caf::expected<float> combine_nodes(uint32_t n_blocks,
                                   std::span<const tree_node> nodes,
                                   std::span<const float> values);

/// The value of tree node `target` from node values that partition its
/// blocks, in canonical tree order: a hierarchical reduction (combine each
/// node's pieces first, the pieces later) gives the same bits as
/// `combine_nodes` on all of them at once.
/// Errors: invalid_split when `nodes` do not partition target's blocks
/// (within n_blocks) into tree nodes nested in `target`.
caf::expected<float> combine_into(uint32_t n_blocks, tree_node target,
                                  std::span<const tree_node> nodes,
                                  std::span<const float> values);

} // namespace lockstep::model
