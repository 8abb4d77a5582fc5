#pragma once

// The chip graph of a cluster config: directed links with dense ids, and
// shortest routes (fewest hops) between chips.
//
// Directed link d = 2 * i + (0 for a->b, 1 for b->a) of undirected link i.
// Thread-safety: route() caches; not thread-safe.

#include "planner/cluster_config.hpp"

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace lockstep::planner {

class topology {
public:
  explicit topology(const cluster_config& config);

  const cluster_config& config() const noexcept { return *config_; }
  uint32_t chip_count() const noexcept { return config_->chip_count(); }
  uint32_t directed_link_count() const noexcept {
    return static_cast<uint32_t>(config_->links.size() * 2);
  }

  uint32_t link_src(uint32_t d) const;
  uint32_t link_dst(uint32_t d) const;
  const link_profile& profile(uint32_t d) const;

  /// Directed links leaving `chip`, ordered by destination chip.
  std::span<const uint32_t> out_links(uint32_t chip) const {
    return {adj_links_.data() + adj_offsets_[chip],
            adj_offsets_[chip + 1] - adj_offsets_[chip]};
  }

  /// The directed link src -> dst, or -1 if they are not neighbours.
  int64_t find(uint32_t src, uint32_t dst) const;

  /// Directed links of a fewest-hops route src -> dst (empty if src == dst),
  /// ties broken towards lower chip ids; -1 in `ok` if unreachable.
  /// Deterministic.
  std::vector<uint32_t> route(uint32_t src, uint32_t dst, bool& ok);

  /// Hops from every chip to `dst` on routes that avoid blocked relays
  /// (no_route if unreachable). Cached per destination.
  static constexpr uint32_t no_route = 0xFFFFFFFFu;
  const std::vector<uint32_t>& hops_to(uint32_t dst);

  /// Whether `chip` may relay traffic.
  bool may_relay(uint32_t chip) const { return !blocked_[chip]; }

  /// Chips that must not relay traffic (spares, failed chips): routes avoid
  /// them. Clears cached routes.
  void block_relays(const std::vector<uint32_t>& chips);

  /// "h3.c5->h4.c0".
  std::string link_name(uint32_t d) const;

private:
  const cluster_config* config_;
  std::vector<uint32_t> adj_offsets_; // CSR: neighbours of chip c
  std::vector<uint32_t> adj_links_;   // directed link ids, by neighbour id
  // BFS trees towards each destination: the next link, and the hop count.
  struct bfs_tree {
    std::vector<int32_t> next;
    std::vector<uint32_t> hops;
  };
  const bfs_tree& tree_to(uint32_t dst);
  std::unordered_map<uint32_t, bfs_tree> parents_;
  std::vector<bool> blocked_;
};

} // namespace lockstep::planner
