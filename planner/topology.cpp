#include "planner/topology.hpp"

#include <algorithm>
#include <deque>

namespace lockstep::planner {

topology::topology(const cluster_config& config)
    : config_(&config) {
  block_relays({});
  uint32_t n = config.node_count();
  std::vector<std::vector<uint32_t>> adj(n);
  for (uint32_t i = 0; i < config.links.size(); ++i) {
    adj[config.links[i].a].push_back(2 * i);
    adj[config.links[i].b].push_back(2 * i + 1);
  }
  adj_offsets_.push_back(0);
  for (uint32_t c = 0; c < n; ++c) {
    auto& v = adj[c];
    std::sort(v.begin(), v.end(), [&](uint32_t x, uint32_t y) {
      return link_dst(x) < link_dst(y);
    });
    adj_links_.insert(adj_links_.end(), v.begin(), v.end());
    adj_offsets_.push_back(static_cast<uint32_t>(adj_links_.size()));
  }
}

uint32_t topology::link_src(uint32_t d) const {
  const auto& l = config_->links[d / 2];
  return d % 2 == 0 ? l.a : l.b;
}

uint32_t topology::link_dst(uint32_t d) const {
  const auto& l = config_->links[d / 2];
  return d % 2 == 0 ? l.b : l.a;
}

const link_profile& topology::profile(uint32_t d) const {
  return config_->link_profiles[config_->links[d / 2].profile];
}

int64_t topology::find(uint32_t src, uint32_t dst) const {
  auto first = adj_links_.begin() + adj_offsets_[src];
  auto last = adj_links_.begin() + adj_offsets_[src + 1];
  auto it = std::lower_bound(first, last, dst, [&](uint32_t d, uint32_t v) {
    return link_dst(d) < v;
  });
  if (it != last && link_dst(*it) == dst)
    return *it;
  return -1;
}

const std::vector<topology::hop_count>& topology::hops_to(uint32_t dst) {
  return search(dst, no_node);
}

const std::vector<topology::hop_count>& topology::hops_near(uint32_t dst,
                                                             uint32_t src) {
  return search(dst, src);
}

const std::vector<topology::hop_count>& topology::search(uint32_t dst,
                                                          uint32_t src) {
  auto it = hops_.find(dst);
  if (it != hops_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.age);
  } else {
    if (hops_.size() >= route_cache_entries) {
      hops_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(dst);
    cached_hops fresh;
    fresh.hops.assign(node_count(), no_route);
    fresh.hops[dst] = 0;
    fresh.frontier = {dst};
    fresh.age = lru_.begin();
    it = hops_.emplace(dst, std::move(fresh)).first;
  }
  auto& e = it->second;
  // BFS over reversed edges from dst, a level at a time; blocked chips and
  // host endpoints get a distance (they may be a route's source) but are
  // not expanded (never relays). dst itself is always expanded.
  auto done = [&] {
    return src != no_node && e.hops[src] != no_route &&
           e.depth >= uint32_t{e.hops[src]};
  };
  std::vector<uint32_t> next;
  while (!e.frontier.empty() && !done()) {
    // Routes longer than the type holds are treated as none.
    if (e.depth + 1 >= no_route) {
      e.frontier.clear();
      break;
    }
    next.clear();
    for (auto v : e.frontier)
      for (auto i = adj_offsets_[v]; i < adj_offsets_[v + 1]; ++i) {
        uint32_t u = link_dst(adj_links_[i]);
        if (e.hops[u] != no_route)
          continue;
        e.hops[u] = static_cast<hop_count>(e.depth + 1);
        if (!blocked_[u])
          next.push_back(u);
      }
    ++e.depth;
    e.frontier.swap(next);
  }
  return e.hops;
}

void topology::block_relays(const std::vector<uint32_t>& chips) {
  // Host endpoints never relay: a route between chips through a host would
  // cross PCIe twice and the host's process, which the schedule does not
  // model.
  blocked_.assign(node_count(), false);
  for (uint32_t v = chip_count(); v < node_count(); ++v)
    blocked_[v] = true;
  for (auto c : chips)
    if (c < chip_count())
      blocked_[c] = true;
  hops_.clear();
  lru_.clear();
}

std::string topology::link_name(uint32_t d) const {
  return transport::to_string(config_->ref(link_src(d))) + "->" +
         transport::to_string(config_->ref(link_dst(d)));
}

uint32_t topology::hops(uint32_t src, uint32_t dst) {
  if (src == dst)
    return 0;
  if (find(src, dst) >= 0)
    return 1;
  return hops_near(dst, src)[src];
}

} // namespace lockstep::planner
