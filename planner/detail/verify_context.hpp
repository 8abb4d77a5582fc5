#pragma once

// Shared by the verifier's parts (planner/verifier.cpp): the plan under
// test, the config, the report, and names for what a violation points at.
// Every violation is "<rule>: <what>", the rule one of the names below, so a
// test can check that a broken plan trips exactly the rule it breaks.

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"
#include "planner/verifier.hpp"

#include <string>
#include <string_view>

namespace lockstep::planner::detail {

class verify_context {
public:
  verify_context(const plan& p, const cluster_config& c, size_t max,
                 verify_report& report)
      : p(p)
      , c(c)
      , max_(max)
      , report_(report) {}

  void fail(std::string_view rule, const std::string& what) {
    report_.fired.insert(std::string{rule});
    if (report_.violations.size() < max_)
      report_.violations.push_back(std::string{rule} + ": " + what);
  }
  bool ok() const { return report_.ok(); }

  std::string node(uint32_t n) const {
    return n < c.node_count() ? transport::to_string(c.ref(n))
                              : "node#" + std::to_string(n);
  }
  std::string op_name(const step_program& prog, const op& o) const {
    return std::string{to_string(prog.kind)} + " op " + std::to_string(o.id) +
           " (" + to_string(o.kind) + " on " + node(o.chip) + ", slots " +
           std::to_string(o.start_slot) + "+" +
           std::to_string(o.duration_slots) + ")";
  }
  std::string tr_name(const step_program& prog, const transfer& t) const {
    return std::string{to_string(prog.kind)} + " transfer " +
           std::to_string(t.id) + " (" + node(t.src) + "->" + node(t.dst) +
           ", slots " + std::to_string(t.start_slot) + "+" +
           std::to_string(t.duration_slots) + ")";
  }
  // 64-bit: a plan can hold any 32-bit start and duration.
  static uint64_t end(const op& o) {
    return uint64_t{o.start_slot} + o.duration_slots;
  }
  static uint64_t end(const transfer& t) {
    return uint64_t{t.start_slot} + t.duration_slots;
  }

  const plan& p;
  const cluster_config& c;

private:
  size_t max_;
  verify_report& report_;
};

/// Ids, links, durations, conflicts, dependencies and routes, receive and
/// send windows, alternating-buffer reuse, the determinism rule of every
/// combine, and the pipelining period. Returns false if ids are broken
/// (later checks index by id).
bool verify_schedule(verify_context& v, const step_program& prog);

/// The program as a program: every input has exactly one earlier source
/// with its shape and place; every operand has the shape its op kind needs
/// by the model; every (layer, micro-batch, part) is computed once, on a
/// chip holding its shards; layers in order; the token loop.
void verify_dataflow(verify_context& v, const step_program& prog);

/// SRAM: every shard, KV slice, operand, scratch and window inside its
/// chip's SRAM, and no two of them that are live at the same time overlap
/// (computed from the offsets in the plan, nothing else).
void verify_memory(verify_context& v, const step_program& prog);

} // namespace lockstep::planner::detail
