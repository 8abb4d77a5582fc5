#pragma once

// How close k chips of a cluster can possibly be to each other: lower
// bounds, from the chip graph alone, on the hop distances any set of k
// usable chips spans. The token-latency lower bound (planner/lower_bound.hpp)
// charges each layer's reductions these hops.
//
// Distances run over chip-to-chip links between usable chips only (spares
// and failed chips neither hold shards nor relay; host endpoints never
// relay). Two facts make the bounds sound:
//   - a set of diameter δ lies inside the ball of radius δ around any of its
//     members, so it has at most M(δ) = max over chips v of |B(v, δ)| chips;
//   - a set of diameter 1 is a clique, so it has at most ω chips (the
//     largest clique);
//   - a set of diameter 2 is a clique of G² (chips joined when at most 2
//     hops apart), so it has at most ω(G²) chips: found exactly by a
//     clique search inside every ball of radius 2 (falling back to M(2)
//     past a work budget; groq-10440 takes ~10 M steps, ~35 ms).
// Every figure here may only err low (a larger M or ω is still a bound):
// when counting a ball exactly would take too long (10,440 chips at radius
// 3), M(r) falls back to the Moore bound from the largest degree.
//
// Thread-safety: not thread-safe (balls are computed lazily).

#include "planner/cluster_config.hpp"

#include <cstdint>
#include <optional>
#include <vector>

namespace lockstep::planner::detail {

class chip_reach {
public:
  /// `usable[c]`: chip c may hold shards and relay. REQUIRES: size ==
  /// config.chip_count().
  chip_reach(const cluster_config& config, const std::vector<bool>& usable);

  /// Usable chips.
  uint32_t chips() const noexcept { return usable_count_; }

  /// Least r such that some usable chip has k usable chips (itself
  /// included) within r hops: every chip that must hear from k chips (or
  /// that k chips must hear from) is at least this far from one of them.
  /// 0 for k <= 1. REQUIRES: k <= chips().
  uint32_t min_reach(uint32_t k);

  /// Lower bound on the diameter of any set of k usable chips: 0 for
  /// k <= 1, 1 up to the largest clique, 2 up to max_diameter2_set(),
  /// then at least 3; and never less than min_reach(k). REQUIRES:
  /// k <= chips().
  uint32_t min_diameter(uint32_t k);

  /// The most usable chips a set of diameter <= 2 can hold (ω(G²), or
  /// M(2) when counting it exceeds the work budget).
  uint64_t max_diameter2_set();

  /// The largest clique of usable chips (1 if none are linked).
  uint32_t clique() const noexcept { return clique_; }

  /// Most links joining the same two chips (parallel links).
  uint32_t max_parallel_links() const noexcept { return parallel_; }

  /// Most chip-to-chip links of one usable chip to usable chips.
  uint32_t max_degree() const noexcept { return max_degree_; }

private:
  /// M(r): the most usable chips within r hops of one usable chip.
  uint64_t max_ball(uint32_t r);

  /// The most usable chips pairwise at most `radius` (1 or 2) hops apart,
  /// if more than `best`, else `best`; nothing if the search would exceed
  /// its work budget or a ball's width. REQUIRES: chips() >= 1.
  std::optional<uint32_t> largest_close_set(uint32_t radius, uint32_t best);

  std::vector<std::vector<uint32_t>> adj_; // usable neighbours, sorted
  uint32_t usable_count_ = 0;
  uint32_t clique_ = 1;
  uint32_t parallel_ = 1;
  uint32_t max_degree_ = 0;
  std::vector<uint64_t> balls_; // M(0), M(1), ... computed so far
  uint64_t diameter2_ = 0;      // max_diameter2_set(), 0 until computed
};

} // namespace lockstep::planner::detail
