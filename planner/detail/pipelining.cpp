#include "planner/detail/pipelining.hpp"

#include <algorithm>
#include <map>

namespace lockstep::planner::detail {

bool overlaps_modulo(const std::vector<std::pair<uint32_t, uint32_t>>& intervals,
                     uint32_t period) {
  // Fold every interval onto [0, period); one that wraps becomes two.
  std::vector<std::pair<uint64_t, uint64_t>> folded;
  folded.reserve(intervals.size() + 1);
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
  // Relays: forwards whose output only transfers read.
  std::vector<bool> local_reader(prog.ops.size(), false);
  for (const auto& o : prog.ops)
    for (const auto& in : o.inputs)
      if (in.producer != no_id)
        local_reader[in.producer] = true;
  uint64_t period = 1;
  using interval = std::pair<uint32_t, uint32_t>; // start, duration
  std::map<uint32_t, std::vector<interval>> node_ops, link_transfers;
  std::map<uint32_t, std::pair<uint32_t, uint32_t>> span; // compute ops
  for (const auto& o : prog.ops) {
    node_ops[o.chip].push_back({o.start_slot, o.duration_slots});
    bool relay = o.kind == op_kind::forward && !local_reader[o.id];
    if (o.chip >= chip_count || relay)
      continue;
    auto [it, fresh] = span.try_emplace(o.chip, o.start_slot, end(o));
    it->second.first = std::min(it->second.first, o.start_slot);
    it->second.second = std::max(it->second.second, end(o));
  }
  for (const auto& [node, s] : span)
    period = std::max<uint64_t>(period, s.second - s.first);
  for (const auto& t : prog.transfers) {
    link_transfers[t.link].push_back({t.start_slot, t.duration_slots});
    const auto& producer = prog.ops[t.after_op];
    if (end(t) > producer.start_slot)
      period = std::max<uint64_t>(period, end(t) - producer.start_slot);
    const auto& reader = prog.ops[t.consumer_op];
    if (end(reader) > t.start_slot)
      period = std::max<uint64_t>(period,
                                  (end(reader) - t.start_slot + 1) / 2);
  }
  if (period >= length)
    return length;
  // Nodes and links whose work of one step spans more than a period must
  // not collide with themselves modulo it; the others cannot.
  auto spans_more = [](const std::vector<interval>& list, uint64_t p) {
    uint32_t lo = list.front().first, hi = 0;
    for (auto [s, d] : list) {
      lo = std::min(lo, s);
      hi = std::max(hi, s + d);
    }
    return hi - lo > p;
  };
  std::vector<const std::vector<interval>*> watch;
  for (const auto* m : {&node_ops, &link_transfers})
    for (const auto& [key, list] : *m)
      if (spans_more(list, period))
        watch.push_back(&list);
  // Try periods upward; a list that clashes at p likely clashes at p + 1
  // too, so it moves to the front (the answer is the same, found sooner).
  for (auto p = static_cast<uint32_t>(period); p < length; ++p) {
    bool clash = false;
    for (size_t i = 0; i < watch.size(); ++i)
      if (spans_more(*watch[i], p) && overlaps_modulo(*watch[i], p)) {
        std::rotate(watch.begin(), watch.begin() + i, watch.begin() + i + 1);
        clash = true;
        break;
      }
    if (!clash)
      return p;
  }
  return length;
}

} // namespace lockstep::planner::detail
