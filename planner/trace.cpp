#include "planner/trace.hpp"

#include <nlohmann/json.hpp>

#include <set>

namespace lockstep::planner {

std::string chrome_trace(const cluster_config& config, const plan& p,
                         program_kind kind) {
  const auto& prog = p.program(kind);
  using nlohmann::json;
  constexpr int chips_pid = 1;
  constexpr int links_pid = 2;
  double slot_us = p.slot_ns / 1000.0;
  json events = json::array();
  events.push_back({{"ph", "M"},
                    {"pid", chips_pid},
                    {"name", "process_name"},
                    {"args", {{"name", "chips"}}}});
  events.push_back({{"ph", "M"},
                    {"pid", links_pid},
                    {"name", "process_name"},
                    {"args", {{"name", "links"}}}});
  std::set<uint32_t> chips, links;
  for (const auto& o : prog.ops) {
    chips.insert(o.chip);
    events.push_back(
        {{"ph", "X"},
         {"pid", chips_pid},
         {"tid", o.chip},
         {"name", std::string{to_string(o.kind)} +
                      (o.layer == model::global_layer
                           ? ""
                           : " l" + std::to_string(o.layer))},
         {"ts", o.start_slot * slot_us},
         {"dur", o.duration_slots * slot_us},
         {"args", {{"op", o.id}, {"micro_batch", o.micro_batch}}}});
  }
  for (const auto& t : prog.transfers) {
    links.insert(t.link);
    events.push_back({{"ph", "X"},
                      {"pid", links_pid},
                      {"tid", t.link},
                      {"name", "transfer " + std::to_string(t.id)},
                      {"ts", t.start_slot * slot_us},
                      {"dur", t.duration_slots * slot_us},
                      {"args", {{"bytes", t.bytes}}}});
  }
  for (auto c : chips)
    events.push_back(
        {{"ph", "M"},
         {"pid", chips_pid},
         {"tid", c},
         {"name", "thread_name"},
         {"args", {{"name", transport::to_string(config.ref(c))}}}});
  for (auto l : links) {
    const auto& spec = config.links[l / 2];
    uint32_t a = l % 2 == 0 ? spec.a : spec.b;
    uint32_t b = l % 2 == 0 ? spec.b : spec.a;
    events.push_back({{"ph", "M"},
                      {"pid", links_pid},
                      {"tid", l},
                      {"name", "thread_name"},
                      {"args",
                       {{"name", transport::to_string(config.ref(a)) + "->" +
                                     transport::to_string(config.ref(b))}}}});
  }
  json doc{{"traceEvents", events}, {"displayTimeUnit", "ns"}};
  return doc.dump();
}

} // namespace lockstep::planner
