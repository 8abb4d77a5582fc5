#include "model/block_rule.hpp"

#include <cassert>

namespace lockstep::model {

uint32_t tree_span(uint32_t n_blocks) {
  uint32_t span = 1;
  while (span < n_blocks)
    span <<= 1;
  return span;
}

std::vector<tree_node> canonical_pieces(uint32_t n_blocks, uint32_t begin,
                                        uint32_t end) {
  assert(begin < end && end <= n_blocks);
  std::vector<tree_node> out;
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

float eval(uint32_t n_blocks, tree_node node, std::span<const tree_node> nodes,
           std::span<const float> values) {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i] == node)
      return values[i];
  assert(node.count > 1);
  uint32_t half = node.count / 2;
  float left = eval(n_blocks, {node.first, half}, nodes, values);
  if (node.first + half >= n_blocks)
    return left;
  return left + eval(n_blocks, {node.first + half, half}, nodes, values);
}

} // namespace

float combine_nodes(uint32_t n_blocks, std::span<const tree_node> nodes,
                    std::span<const float> values) {
  assert(nodes.size() == values.size() && !nodes.empty());
  return eval(n_blocks, {0, tree_span(n_blocks)}, nodes, values);
}

float combine_into(uint32_t n_blocks, tree_node target,
                   std::span<const tree_node> nodes,
                   std::span<const float> values) {
  assert(nodes.size() == values.size() && !nodes.empty());
  return eval(n_blocks, target, nodes, values);
}

} // namespace lockstep::model
