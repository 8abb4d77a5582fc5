#include "model/block_rule.hpp"

#include <algorithm>
#include <cassert>
#include <string>

namespace lockstep::model {

uint32_t tree_span(uint32_t n_blocks) {
  // 64-bit, so a hostile n_blocks above 2^31 cannot wrap the loop; such a
  // reduction has no valid tree (canonical_pieces and combine_rule refuse).
  uint64_t span = 1;
  while (span < n_blocks)
    span <<= 1;
  return static_cast<uint32_t>(std::min<uint64_t>(span, max_blocks));
}

std::vector<tree_node> canonical_pieces(uint32_t n_blocks, uint32_t begin,
                                        uint32_t end) {
  std::vector<tree_node> out;
  if (begin >= end || end > n_blocks || n_blocks > max_blocks)
    return out;
  uint32_t root = tree_span(n_blocks);
  uint32_t pos = begin;
  while (pos < end) {
    // Largest aligned node starting at `pos` whose (truncated) extent stays
    // inside [begin, end).
    uint32_t count = 1;
    while (count < root) {
      uint32_t next = count << 1;
      if (pos % next != 0)
        break;
      uint32_t extent_end = pos + next < n_blocks ? pos + next : n_blocks;
      if (extent_end > end)
        break;
      count = next;
    }
    out.push_back({pos, count});
    pos = pos + count < n_blocks ? pos + count : n_blocks;
  }
  return out;
}

float tree_reduce_in_place(std::span<float> p) {
  size_t n = p.size();
  if (n == 0)
    return 0.0f;
  for (size_t stride = 1; stride < n; stride <<= 1)
    for (size_t i = 0; i + stride < n; i += 2 * stride)
      p[i] = p[i] + p[i + stride];
  return p[0];
}

namespace {

std::string node_name(tree_node n) {
  return "[" + std::to_string(n.first) + ", +" + std::to_string(n.count) + ")";
}

caf::error invalid(const std::string& what) {
  return caf::make_error(errc::invalid_split, what);
}

// Compiles the value of `node` into adds over the inputs; returns its slot.
// Depth is at most log2 of the tree span (32), so recursion is bounded.
class compiler {
public:
  compiler(uint32_t n_blocks, std::span<const tree_node> inputs)
      : n_blocks_(n_blocks)
      , inputs_(inputs)
      , used_(inputs.size(), false) {}

  caf::expected<uint32_t> slot_of(tree_node node, std::vector<uint32_t>& l,
                                  std::vector<uint32_t>& r) {
    for (size_t i = 0; i < inputs_.size(); ++i)
      if (inputs_[i] == node) {
        if (used_[i])
          return invalid("tree node " + node_name(node) + " given twice");
        used_[i] = true;
        return static_cast<uint32_t>(i);
      }
    if (node.count <= 1)
      return invalid("block " + std::to_string(node.first) +
                     " is not covered by any input node");
    uint32_t half = node.count / 2;
    auto left = slot_of({node.first, half}, l, r);
    if (!left)
      return left;
    if (node.first + half >= n_blocks_)
      return left; // absent right child: the node is its left child
    auto right = slot_of({node.first + half, half}, l, r);
    if (!right)
      return right;
    l.push_back(*left);
    r.push_back(*right);
    return static_cast<uint32_t>(inputs_.size() + l.size() - 1);
  }

  caf::error check_all_used() const {
    for (size_t i = 0; i < inputs_.size(); ++i)
      if (!used_[i])
        return invalid("input node " + node_name(inputs_[i]) +
                       " overlaps another or lies outside the combined range");
    return {};
  }

private:
  uint32_t n_blocks_;
  std::span<const tree_node> inputs_;
  std::vector<bool> used_;
};

bool is_tree_node(uint32_t n_blocks, tree_node n) {
  return n.count != 0 && (n.count & (n.count - 1)) == 0 &&
         n.first % n.count == 0 && n.first < n_blocks &&
         n.count <= tree_span(n_blocks);
}

} // namespace

caf::expected<combine_rule>
combine_rule::make(uint32_t n_blocks, std::span<const tree_node> inputs,
                   bool root) {
  if (n_blocks == 0 || n_blocks > max_blocks || inputs.empty())
    return invalid("a combine needs 1.." + std::to_string(max_blocks) +
                   " blocks and at least one input node");
  uint32_t b0 = n_blocks, b1 = 0;
  for (auto n : inputs) {
    if (!is_tree_node(n_blocks, n))
      return invalid("input " + node_name(n) +
                     " is not a node of the canonical tree over " +
                     std::to_string(n_blocks) + " blocks");
    b0 = std::min(b0, n.first);
    b1 = std::max(b1, std::min(n.first + n.count, n_blocks));
  }
  combine_rule rule;
  rule.n_blocks_ = n_blocks;
  rule.n_inputs_ = inputs.size();
  if (root) {
    rule.outputs_ = {{0, tree_span(n_blocks)}};
  } else {
    if (b0 >= b1)
      return invalid("empty block range");
    rule.outputs_ = canonical_pieces(n_blocks, b0, b1);
  }
  compiler c{n_blocks, inputs};
  std::vector<uint32_t> left, right;
  for (auto out : rule.outputs_) {
    auto slot = c.slot_of(out, left, right);
    if (!slot)
      return slot.error();
    rule.out_slots_.push_back(*slot);
  }
  if (auto err = c.check_all_used())
    return err;
  for (size_t i = 0; i < left.size(); ++i)
    rule.adds_.push_back({left[i], right[i]});
  return rule;
}

void combine_rule::eval(const float* in, float* out, float* scratch) const {
  std::copy_n(in, n_inputs_, scratch);
  float* slot = scratch;
  for (size_t k = 0; k < adds_.size(); ++k)
    slot[n_inputs_ + k] = slot[adds_[k].left] + slot[adds_[k].right];
  for (size_t o = 0; o < out_slots_.size(); ++o)
    out[o] = slot[out_slots_[o]];
}

namespace {

caf::expected<float> evaluate(uint32_t n_blocks, tree_node target,
                              std::span<const tree_node> nodes,
                              std::span<const float> values) {
  if (nodes.size() != values.size())
    return invalid(std::to_string(nodes.size()) + " nodes but " +
                   std::to_string(values.size()) + " values");
  for (auto n : nodes)
    if (n.first < target.first || n.first + n.count > target.first +
                                                          target.count)
      return invalid("node " + node_name(n) + " is not nested in " +
                     node_name(target));
  bool root = target == tree_node{0, tree_span(n_blocks)};
  auto rule = combine_rule::make(n_blocks, nodes, root);
  if (!rule)
    return rule.error();
  if (!root && (rule->outputs().size() != 1 || rule->outputs()[0] != target))
    return invalid("nodes do not cover " + node_name(target));
  std::vector<float> scratch(rule->scratch_size());
  float out = 0;
  rule->eval(values.data(), &out, scratch.data());
  return out;
}

} // namespace

caf::expected<float> combine_nodes(uint32_t n_blocks,
                                   std::span<const tree_node> nodes,
                                   std::span<const float> values) {
  return evaluate(n_blocks, {0, tree_span(n_blocks)}, nodes, values);
}

caf::expected<float> combine_into(uint32_t n_blocks, tree_node target,
                                  std::span<const tree_node> nodes,
                                  std::span<const float> values) {
  return evaluate(n_blocks, target, nodes, values);
}

} // namespace lockstep::model
