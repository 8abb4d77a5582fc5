#pragma once

// The chip graph of a cluster config: directed links with dense ids, and
// hop distances between chips (the schedule builder picks routes with them).
//
// Directed link d = 2 * i + (0 for a->b, 1 for b->a) of undirected link i.
// Thread-safety: hops_to() caches; not thread-safe.

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

  /// Hops from every chip to `dst` on routes that avoid blocked relays
  /// (no_route if unreachable). Cached per destination.
  static constexpr uint32_t no_route = 0xFFFFFFFFu;
  const std::vector<uint32_t>& hops_to(uint32_t dst);

  /// Whether `chip` may relay traffic.
  bool may_relay(uint32_t chip) const { return !blocked_[chip]; }

  /// Chips that must not relay traffic (spares, failed chips): routes avoid
  /// them. Clears cached distances.
  void block_relays(const std::vector<uint32_t>& chips);

  /// "h3.c5->h4.c0".
  std::string link_name(uint32_t d) const;

private:
  const cluster_config* config_;
  std::vector<uint32_t> adj_offsets_; // CSR: neighbours of chip c
  std::vector<uint32_t> adj_links_;   // directed link ids, by neighbour id
  // Hops to each destination from every chip, by BFS; cached.
  std::unordered_map<uint32_t, std::vector<uint32_t>> hops_;
  std::vector<bool> blocked_;
};

} // namespace lockstep::planner
