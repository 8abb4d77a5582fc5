#pragma once

// Shared by the verifier tests: a verified plan to break (tiny-64 on
// local-64: one-node groups of 4 with reduction splits), the verdict on a
// broken copy with every violation reported, and helpers that break a plan
// in one place without breaking anything else.

#include "tests/planner/planner_fixture.hpp"
#include "transport/payload_frame.hpp"

#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#define EXPECT_VIOLATION(text, needle)                                         \
  EXPECT_NE((text).find(needle), std::string::npos) << (text)

// Exactly these rules fire.
#define EXPECT_RULES(report, ...)                                              \
  EXPECT_EQ((report).rules(), (std::set<std::string>{__VA_ARGS__}))            \
      << ::lockstep::planner::test::joined(report)

namespace lockstep::planner::test {

inline std::string joined(const verify_report& r) {
  std::string all;
  for (const auto& v : r.violations)
    all += v + "\n";
  return all;
}

// Applies `mutate` to a copy of a good plan and verifies it, every
// violation reported (verify_plan's default stops at 50, which could hide
// a second rule behind many lines of the first).
inline verify_report report_of(plan p, const cluster_config& config,
                               const std::function<void(plan&)>& mutate) {
  mutate(p);
  return verify_plan(p, config, std::numeric_limits<size_t>::max());
}

// The index of the shard of (layer, kind) on `chip`.
inline uint32_t shard_on(const plan& p, uint32_t chip, uint32_t layer,
                         model::tensor_kind kind) {
  for (uint32_t i = 0; i < p.shards.size(); ++i)
    if (p.shards[i].chip == chip && p.shards[i].tensor.layer == layer &&
        p.shards[i].tensor.kind == kind)
      return i;
  throw std::runtime_error("no such shard");
}

// Whether [s, s + d) meets [a, b) when both repeat every `period` slots
// (all of them inside a step of `length` slots).
inline bool meets_modulo(int64_t s, int64_t d, int64_t a, int64_t b,
                         int64_t period, int64_t length) {
  int64_t steps = length / period + 1;
  for (int64_t k = -steps; k <= steps; ++k)
    if (s < b + k * period && a + k * period < s + d)
      return true;
  return false;
}

// The first slot >= `from` at which `node` is idle for `duration` slots
// within the step, also when steps start every period; or no_id.
inline uint32_t idle_slot(const step_program& prog, uint32_t node,
                          uint32_t duration, uint32_t from) {
  for (uint32_t s = from; s + duration <= prog.slots_per_step; ++s) {
    bool busy = false;
    for (const auto& o : prog.ops)
      busy |= o.chip == node &&
              meets_modulo(s, duration, o.start_slot, end_slot(o),
                           prog.period_slots, prog.slots_per_step);
    if (!busy)
      return s;
  }
  return no_id;
}

// Appends a copy of op `id` that starts at `start`: same inputs, weights,
// outputs and scratch in the same places; nothing reads its outputs.
inline op& append_copy(step_program& prog, uint32_t id, uint32_t start) {
  op x = prog.ops[id];
  x.id = static_cast<uint32_t>(prog.ops.size());
  x.start_slot = start;
  prog.ops.push_back(x);
  return prog.ops.back();
}

// Where an op output is sent (transfers of its first hop).
inline std::vector<transfer*> sends_of(step_program& prog, uint32_t op_id,
                                       uint32_t output) {
  std::vector<transfer*> out;
  for (auto& t : prog.transfers)
    if (t.after_op == op_id && t.src_output == output)
      out.push_back(&t);
  return out;
}

// A transfer that has its send window to itself (an output sent on one
// link only: windows of outputs sent on several links are shared).
inline transfer& lone_transfer(step_program& prog) {
  for (auto& t : prog.transfers)
    if (t.after_transfer == no_id && t.payload_bytes >= 64 &&
        sends_of(prog, t.after_op, t.src_output).size() == 1)
      return t;
  throw std::runtime_error("no transfer with its own send window");
}

class verifier : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    config_.emplace(load("local-64"));
    good_.emplace(make(*config_, "tiny-64").p);
  }
  static void TearDownTestSuite() {
    good_.reset();
    config_.reset();
  }

  verify_report report(const std::function<void(plan&)>& mutate) {
    return report_of(*good_, *config_, mutate);
  }
  std::string violations(const std::function<void(plan&)>& mutate) {
    return joined(report(mutate));
  }

  static inline std::optional<cluster_config> config_;
  static inline std::optional<plan> good_;
};

} // namespace lockstep::planner::test
