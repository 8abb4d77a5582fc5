#include "planner/detail/route_search.hpp"

#include "planner/cost_model.hpp"

#include <algorithm>
#include <functional>
#include <limits>

namespace lockstep::planner::detail {

std::optional<std::vector<uint32_t>>
route_search::earliest(uint32_t src, uint32_t dst, uint64_t bytes,
                       uint32_t ready, uint32_t forward_slots, uint64_t slot_ns,
                       const std::vector<uint32_t>& chip_free,
                       const std::vector<uint32_t>& link_free) {
  if (src == dst)
    return std::vector<uint32_t>{};
  if (auto d = topo_.find(src, dst); d >= 0)
    return std::vector<uint32_t>{static_cast<uint32_t>(d)}; // the only
                                                            // route that short
  const auto& hops = topo_.hops_near(dst, src);
  if (hops[src] == topology::no_route)
    return std::nullopt;
  uint32_t limit = hops[src] + (hops[src] > 1 ? 1 : 0);
  // State: (chip, hops taken). Labels are arrival slots.
  index_.clear();
  labels_.clear();
  keys_.clear();
  queue_.clear();
  auto push = [&](uint32_t arrive, uint32_t link, uint32_t state) {
    queue_.push_back({arrive, link, state});
    std::push_heap(queue_.begin(), queue_.end(), std::greater<>{});
  };
  auto state_of = [&](uint32_t chip, uint32_t h) {
    uint64_t key = uint64_t{chip} << 8 | h;
    auto [it, fresh] = index_.try_emplace(key, uint32_t(labels_.size()));
    if (fresh) {
      labels_.push_back({std::numeric_limits<uint32_t>::max(), no_id, no_id});
      keys_.push_back(key);
    }
    return it->second;
  };
  uint32_t start = state_of(src, 0);
  labels_[start].arrive = ready;
  push(ready, no_id, start);
  uint32_t found = no_id;
  while (!queue_.empty()) {
    std::pop_heap(queue_.begin(), queue_.end(), std::greater<>{});
    auto [arrive, via, st] = queue_.back();
    queue_.pop_back();
    if (arrive != labels_[st].arrive || via != labels_[st].link)
      continue; // superseded
    auto chip = static_cast<uint32_t>(keys_[st] >> 8);
    auto h = static_cast<uint32_t>(keys_[st] & 0xFF);
    if (chip == dst) {
      found = st;
      break;
    }
    // Leaving a relay takes a forward op once the chip is free.
    uint32_t leave = arrive;
    if (chip != src)
      leave = std::max(arrive, chip_free[chip]) + forward_slots;
    for (uint32_t d : topo_.out_links(chip)) {
      uint32_t next = topo_.link_dst(d);
      if (hops[next] == topology::no_route || h + 1 + hops[next] > limit)
        continue;
      if (next != dst && !topo_.may_relay(next))
        continue;
      uint32_t t0 = std::max(leave, link_free[d]);
      uint32_t t1 =
          t0 + to_slots(transfer_duration_ns(topo_.profile(d), bytes), slot_ns);
      uint32_t ns = state_of(next, h + 1);
      auto& l = labels_[ns];
      if (t1 < l.arrive || (t1 == l.arrive && d < l.link)) {
        l = {t1, d, st};
        push(t1, d, ns);
      }
    }
  }
  if (found == no_id)
    return std::nullopt;
  std::vector<uint32_t> path;
  for (uint32_t st = found; labels_[st].prev != no_id; st = labels_[st].prev)
    path.push_back(labels_[st].link);
  std::reverse(path.begin(), path.end());
  return path;
}

} // namespace lockstep::planner::detail
