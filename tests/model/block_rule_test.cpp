#include "model/block_rule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <vector>

namespace lockstep::model {
namespace {

std::vector<float> partials(uint32_t n) {
  std::vector<float> p(n);
  for (uint32_t i = 0; i < n; ++i)
    p[i] = 1.0f / static_cast<float>(i + 3) + 1e7f * static_cast<float>(i % 3);
  return p;
}

float whole(std::vector<float> p) {
  return tree_reduce_in_place(p);
}

float split(const std::vector<float>& p, std::vector<uint32_t> cuts) {
  auto n = static_cast<uint32_t>(p.size());
  std::vector<tree_node> nodes;
  std::vector<float> values;
  for (size_t i = 0; i + 1 < cuts.size(); ++i)
    for (auto node : canonical_pieces(n, cuts[i], cuts[i + 1])) {
      uint32_t end = node.first + node.count < n ? node.first + node.count : n;
      std::vector<float> local(p.begin() + node.first, p.begin() + end);
      nodes.push_back(node);
      values.push_back(tree_reduce_in_place(local));
    }
  return *combine_nodes(n, nodes, values);
}

TEST(block_rule, aligned_power_of_two_ranges_are_one_piece) {
  auto pieces = canonical_pieces(128, 32, 64);
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0], (tree_node{32, 32}));
  EXPECT_EQ(canonical_pieces(7, 0, 7), (std::vector<tree_node>{{0, 8}}));
  EXPECT_EQ(canonical_pieces(7, 4, 7), (std::vector<tree_node>{{4, 4}}));
}

TEST(block_rule, unaligned_ranges_decompose_into_maximal_nodes) {
  EXPECT_EQ(canonical_pieces(16, 3, 11),
            (std::vector<tree_node>{{3, 1}, {4, 4}, {8, 2}, {10, 1}}));
}

TEST(block_rule, any_split_gives_the_same_bits) {
  for (uint32_t n : {1u, 2u, 3u, 7u, 8u, 13u, 64u, 100u, 448u}) {
    auto p = partials(n);
    float ref = whole(p);
    for (uint32_t ways : {1u, 2u, 3u, 8u}) {
      if (ways > n)
        continue;
      std::vector<uint32_t> cuts;
      for (uint32_t i = 0; i <= ways; ++i)
        cuts.push_back(n * i / ways);
      float got = split(p, cuts);
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(ref))
          << "n=" << n << " ways=" << ways;
    }
  }
}

// Two-level reduction as the planner schedules groups wider than a node:
// parts inside a "node" first combine into the canonical pieces of the
// node's block range, then those pieces combine into the root.
TEST(block_rule, hierarchical_combine_gives_the_same_bits) {
  for (uint32_t n : {7u, 64u, 100u, 232u, 448u}) {
    auto p = partials(n);
    float ref = whole(p);
    for (uint32_t nodes_n : {2u, 3u}) {
      std::vector<tree_node> top_nodes;
      std::vector<float> top_values;
      for (uint32_t q = 0; q < nodes_n; ++q) {
        uint32_t b0 = n * q / nodes_n, b1 = n * (q + 1) / nodes_n;
        // Inside the node: four parts, each sending its maximal pieces.
        std::vector<tree_node> in_nodes;
        std::vector<float> in_values;
        for (uint32_t i = 0; i < 4; ++i) {
          uint32_t c0 = b0 + (b1 - b0) * i / 4, c1 = b0 + (b1 - b0) * (i + 1) / 4;
          if (c1 <= c0)
            continue;
          for (auto node : canonical_pieces(n, c0, c1)) {
            uint32_t end = std::min(node.first + node.count, n);
            std::vector<float> local(p.begin() + node.first, p.begin() + end);
            in_nodes.push_back(node);
            in_values.push_back(tree_reduce_in_place(local));
          }
        }
        for (auto piece : canonical_pieces(n, b0, b1)) {
          std::vector<tree_node> sub;
          std::vector<float> sub_values;
          for (size_t i = 0; i < in_nodes.size(); ++i)
            if (in_nodes[i].first >= piece.first &&
                in_nodes[i].first < piece.first + piece.count) {
              sub.push_back(in_nodes[i]);
              sub_values.push_back(in_values[i]);
            }
          top_nodes.push_back(piece);
          top_values.push_back(*combine_into(n, piece, sub, sub_values));
        }
      }
      float got = *combine_nodes(n, top_nodes, top_values);
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(ref))
          << "n=" << n << " nodes=" << nodes_n;
    }
  }
}

TEST(block_rule, order_differs_from_a_sequential_sum) {
  // The rule is not a left fold: this is what makes the canonical order a
  // real constraint (a ring all-reduce would violate it).
  std::vector<float> p{1e8f, 1.0f, -1e8f, 1.0f};
  float seq = ((p[0] + p[1]) + p[2]) + p[3];
  EXPECT_NE(whole(p), seq);
}

} // namespace
} // namespace lockstep::model
