#pragma once

// The node graph of a cluster config (chips, then host endpoints):
// directed links with dense ids, and hop distances between nodes (the
// schedule builder picks routes with them).
//
// Directed link d = 2 * i + (0 for a->b, 1 for b->a) of undirected link i.
// Host endpoints are ends of routes, never relays: routes between chips use
// chip-to-chip links only.
// Thread-safety: hops_to() caches; not thread-safe.

#include "planner/cluster_config.hpp"

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace lockstep::planner {

class topology {
public:
  explicit topology(const cluster_config& config);

  const cluster_config& config() const noexcept { return *config_; }
  uint32_t chip_count() const noexcept { return config_->chip_count(); }
  /// Chips and host endpoints: the size of per-node arrays (hops_to()).
  uint32_t node_count() const noexcept { return config_->node_count(); }
  uint32_t directed_link_count() const noexcept {
    return static_cast<uint32_t>(config_->links.size() * 2);
  }

  uint32_t link_src(uint32_t d) const;
  uint32_t link_dst(uint32_t d) const;
  const link_profile& profile(uint32_t d) const;

  /// Directed links leaving node `node`, ordered by destination node (so a
  /// chip's link to its host endpoint comes last). Their destinations may
  /// be host endpoints: callers walking chips skip those (may_relay()).
  std::span<const uint32_t> out_links(uint32_t node) const {
    return {adj_links_.data() + adj_offsets_[node],
            adj_offsets_[node + 1] - adj_offsets_[node]};
  }

  /// The directed link src -> dst, or -1 if they are not neighbours.
  int64_t find(uint32_t src, uint32_t dst) const;

  /// Hops from every node to `dst` on routes that avoid blocked relays and
  /// host endpoints (no_route if unreachable, or farther than 254 hops: no
  /// cluster routes that far); node_count() entries. Cached per
  /// destination, the `route_cache_entries` most recently used. A
  /// 10,440-chip cluster's table is ~12 KB; a plan of falcon-180b there
  /// routes to ~1,350 destinations, each about once a build, over 7
  /// builds: 128 tables (1.5 MB) search ~6,000 (85 M edge visits), room
  /// for all (16 MB) would search each once (33 M), and nothing in between
  /// helps (the builds cycle through them). The memory target decides.
  /// The reference is valid until the next call of hops_to() or
  /// hops_near().
  using hop_count = uint8_t;
  static constexpr hop_count no_route = 0xFF;
  static constexpr size_t route_cache_entries = 128;
  const std::vector<hop_count>& hops_to(uint32_t dst);

  /// The same table, exact for every node at most hops(src, dst) hops
  /// from `dst`; farther nodes may read no_route. A route search from src
  /// never needs them: it takes at most one hop more than the shortest
  /// route, so every chip it steps onto is at most hops(src, dst) from dst
  /// (the next level, the largest, is not searched). The breadth-first
  /// search stops there, and resumes when a later call needs more: most
  /// routes stay inside a rack, so this touches hundreds of nodes, not the
  /// cluster.
  const std::vector<hop_count>& hops_near(uint32_t dst, uint32_t src);

  /// Hops on the shortest route from `src` to `dst` (0 if the same node,
  /// no_route if unreachable): find(), else hops_near().
  uint32_t hops(uint32_t src, uint32_t dst);

  /// Whether `node` may relay traffic: never a host endpoint.
  bool may_relay(uint32_t node) const { return !blocked_[node]; }

  /// Chips that must not relay traffic (spares, failed chips): routes avoid
  /// them, as they always avoid host endpoints. Clears cached distances.
  void block_relays(const std::vector<uint32_t>& chips);

  /// "h3.c5->h4.c0".
  std::string link_name(uint32_t d) const;

private:
  const cluster_config* config_;
  std::vector<uint32_t> adj_offsets_; // CSR: neighbours of node v
  std::vector<uint32_t> adj_links_;   // directed link ids, by neighbour id
  // Hops to each destination from every node, by BFS; the most recently
  // used destinations are cached (front of lru_ is the newest).
  struct cached_hops {
    std::vector<hop_count> hops;   // exact up to `depth`
    std::vector<uint32_t> frontier; // nodes at `depth` still to expand
    uint32_t depth = 0;
    std::list<uint32_t>::iterator age;
  };
  // The entry of `dst`, searched until `src` is known and one hop beyond
  // (src == no_node: to the end).
  static constexpr uint32_t no_node = 0xFFFFFFFFu;
  const std::vector<hop_count>& search(uint32_t dst, uint32_t src);
  std::unordered_map<uint32_t, cached_hops> hops_;
  std::list<uint32_t> lru_;
  std::vector<bool> blocked_; // per node; host endpoints always
};

} // namespace lockstep::planner
