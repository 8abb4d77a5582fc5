#pragma once

// The route of one transfer between chips that are not neighbours: among
// the routes of the fewest hops (+1 if that is more than one hop), the one
// on which it arrives first given what chips and links already hold
// (docs/planner.md, "Slot schedule"). Intermediate chips store and
// forward, as on Groq: leaving a relay takes a forward op once the chip is
// free. Ties go to the lower link id, so the search is deterministic.

#include "planner/plan.hpp"
#include "planner/topology.hpp"

#include <cstdint>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace lockstep::planner::detail {

class route_search {
public:
  /// `topo` must outlive the search; its route tables are read (and
  /// cached) through hops_near().
  explicit route_search(topology& topo)
      : topo_(topo) {}

  /// The directed links from `src` to `dst` (none if they are the same
  /// node), or nullopt if `dst` cannot be reached. The payload is
  /// `bytes` (framed) and ready on `src` at slot `ready`; a relay's
  /// forward op takes `forward_slots`; hops take their link profile's
  /// duration in slots of `slot_ns`. `chip_free` and `link_free` are each
  /// node's and directed link's first free slot.
  /// Not thread-safe: the search's containers are kept between calls (a
  /// plan routes ~10^4 times).
  std::optional<std::vector<uint32_t>>
  earliest(uint32_t src, uint32_t dst, uint64_t bytes, uint32_t ready,
           uint32_t forward_slots, uint64_t slot_ns,
           const std::vector<uint32_t>& chip_free,
           const std::vector<uint32_t>& link_free);

private:
  struct label {
    uint32_t arrive = 0;
    uint32_t link = no_id; // link taken into this state
    uint32_t prev = no_id; // previous state index
  };
  // (arrival slot, link, state), a min-heap.
  using entry = std::tuple<uint32_t, uint32_t, uint32_t>;

  topology& topo_;
  std::unordered_map<uint64_t, uint32_t> index_; // (chip << 8 | hops) -> state
  std::vector<label> labels_;
  std::vector<uint64_t> keys_;
  std::vector<entry> queue_;
};

} // namespace lockstep::planner::detail
