#include "planner/detail/core_timeline.hpp"

#include <algorithm>
#include <limits>

namespace lockstep::planner::detail {

namespace {

using interval = std::pair<uint32_t, uint32_t>;

// The earliest start >= ready where [start, start + duration) fits between
// the intervals of `busy`, and the index to insert it at.
std::pair<uint32_t, size_t> first_fit(const std::vector<interval>& busy,
                                      uint32_t ready, uint32_t duration) {
  // Intervals are disjoint and sorted, so their ends are sorted too: skip
  // every interval that ends by `ready`.
  auto it = std::upper_bound(
      busy.begin(), busy.end(), ready,
      [](uint32_t t, const interval& iv) { return t < iv.second; });
  uint32_t start = ready;
  for (; it != busy.end(); ++it) {
    if (uint64_t{start} + duration <= it->first)
      break;
    start = std::max(start, it->second);
  }
  return {start, static_cast<size_t>(it - busy.begin())};
}

} // namespace

uint32_t core_timeline::book(uint32_t ready, uint32_t duration) {
  if (busy_.empty() || duration == 0)
    return ready;
  uint32_t best = std::numeric_limits<uint32_t>::max();
  size_t best_core = 0, best_at = 0;
  for (size_t c = 0; c < busy_.size(); ++c) {
    auto [start, at] = first_fit(busy_[c], ready, duration);
    if (start < best) {
      best = start;
      best_core = c;
      best_at = at;
    }
    if (best == ready)
      break;
  }
  auto& busy = busy_[best_core];
  busy.insert(busy.begin() + static_cast<std::ptrdiff_t>(best_at),
              {best, best + duration});
  return best;
}

} // namespace lockstep::planner::detail
