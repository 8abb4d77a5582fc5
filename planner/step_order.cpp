#include "planner/step_order.hpp"

#include "planner/errc.hpp"

#include <string>
#include <vector>

namespace lockstep::planner {

caf::error check_step_ends_at_samples(const step_program& prog) {
  const auto n_ops = prog.ops.size();
  const auto n_transfers = prog.transfers.size();
  // Walk back from the samples; ops are 0..n_ops-1, transfers follow.
  std::vector<bool> seen(n_ops + n_transfers, false);
  std::vector<size_t> frontier;
  auto reach_op = [&](uint32_t id) {
    if (id < n_ops && !seen[id]) {
      seen[id] = true;
      frontier.push_back(id);
    }
  };
  auto reach_transfer = [&](uint32_t id) {
    if (id < n_transfers && !seen[n_ops + id]) {
      seen[n_ops + id] = true;
      frontier.push_back(n_ops + id);
    }
  };
  bool any_sample = false;
  for (const auto& o : prog.ops)
    if (o.kind == op_kind::sample) {
      any_sample = true;
      reach_op(o.id);
    }
  if (!any_sample)
    return caf::make_error(errc::invalid_plan,
                           std::string{"the "} + to_string(prog.kind) +
                               " program has no sample op");
  while (!frontier.empty()) {
    auto i = frontier.back();
    frontier.pop_back();
    if (i < n_ops) {
      const auto& o = prog.ops[i];
      for (auto a : o.after_ops)
        reach_op(a);
      for (auto t : o.after_transfers)
        reach_transfer(t);
      for (const auto& in : o.inputs) {
        if (in.carried)
          continue; // the previous step's: not this step's ancestor
        if (in.transfer != no_id)
          reach_transfer(in.transfer);
        if (in.producer != no_id)
          reach_op(in.producer);
      }
    } else {
      const auto& t = prog.transfers[i - n_ops];
      if (t.after_op != no_id)
        reach_op(t.after_op);
      if (t.after_transfer != no_id)
        reach_transfer(t.after_transfer);
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (seen[i])
      continue;
    std::string what =
        i < n_ops ? "op " + std::to_string(i) + " (" +
                        to_string(prog.ops[i].kind) + ")"
                  : "transfer " + std::to_string(i - n_ops);
    return caf::make_error(errc::invalid_plan,
                           std::string{"the "} + to_string(prog.kind) +
                               " program's " + what +
                               " leads to no sample: a step could still run "
                               "it after its last sample");
  }
  return {};
}

} // namespace lockstep::planner
