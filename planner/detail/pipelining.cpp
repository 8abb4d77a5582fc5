#include "planner/detail/pipelining.hpp"

#include <algorithm>
#include <map>

namespace lockstep::planner::detail {

bool overlaps_modulo(std::vector<std::pair<uint32_t, uint32_t>> intervals,
                     uint32_t period) {
  // Fold every interval onto [0, period); one that wraps becomes two.
  std::vector<std::pair<uint64_t, uint64_t>> folded;
  for (auto [start, duration] : intervals) {
    if (duration > period)
      return true;
    uint64_t s = start % period, e = s + duration;
    if (e <= period) {
      folded.push_back({s, e});
    } else {
      folded.push_back({s, period});
      folded.push_back({0, e - period});
    }
  }
  std::sort(folded.begin(), folded.end());
  for (size_t i = 1; i < folded.size(); ++i)
    if (folded[i].first < folded[i - 1].second)
      return true;
  return false;
}

uint32_t pipeline_period(const step_program& prog, uint32_t chip_count) {
  uint32_t length = prog.slots_per_step;
  if (prog.kind == program_kind::decode || length == 0)
    return length;
  auto end = [](const auto& x) { return x.start_slot + x.duration_slots; };
  uint64_t period = 1;
  // Chip spans.
  std::map<uint32_t, std::pair<uint32_t, uint32_t>> span; // node -> [lo, hi)
  std::map<uint32_t, std::vector<std::pair<uint32_t, uint32_t>>> host_ops;
  for (const auto& o : prog.ops) {
    if (o.chip >= chip_count) {
      host_ops[o.chip].push_back({o.start_slot, o.duration_slots});
      continue;
    }
    auto [it, fresh] = span.try_emplace(o.chip, o.start_slot, end(o));
    it->second.first = std::min(it->second.first, o.start_slot);
    it->second.second = std::max(it->second.second, end(o));
  }
  for (const auto& [node, s] : span)
    period = std::max<uint64_t>(period, s.second - s.first);
  // Link spans and window reuse.
  std::map<uint32_t, std::pair<uint32_t, uint32_t>> link_span;
  for (const auto& t : prog.transfers) {
    auto [it, fresh] = link_span.try_emplace(t.link, t.start_slot, end(t));
    it->second.first = std::min(it->second.first, t.start_slot);
    it->second.second = std::max(it->second.second, end(t));
    const auto& producer = prog.ops[t.after_op];
    if (end(t) > producer.start_slot)
      period = std::max<uint64_t>(period, end(t) - producer.start_slot);
    const auto& reader = prog.ops[t.consumer_op];
    if (end(reader) > t.start_slot)
      period = std::max<uint64_t>(period,
                                  (end(reader) - t.start_slot + 1) / 2);
  }
  for (const auto& [link, s] : link_span)
    period = std::max<uint64_t>(period, s.second - s.first);
  if (period >= length)
    return length;
  // The host's few ops: move the period up past any modulo clash.
  for (auto p = static_cast<uint32_t>(period); p < length; ++p) {
    bool clash = false;
    for (const auto& [node, list] : host_ops)
      clash = clash || overlaps_modulo(list, p);
    if (!clash)
      return p;
  }
  return length;
}

} // namespace lockstep::planner::detail
