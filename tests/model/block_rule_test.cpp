#include "model/block_rule.hpp"

#include <gtest/gtest.h>

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
  return combine_nodes(n, nodes, values);
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

TEST(block_rule, order_differs_from_a_sequential_sum) {
  // The rule is not a left fold: this is what makes the canonical order a
  // real constraint (a ring all-reduce would violate it).
  std::vector<float> p{1e8f, 1.0f, -1e8f, 1.0f};
  float seq = ((p[0] + p[1]) + p[2]) + p[3];
  EXPECT_NE(whole(p), seq);
}

} // namespace
} // namespace lockstep::model
