#include "planner/critical_path.hpp"

#include "planner/topology.hpp"

#include <algorithm>
#include <map>

namespace lockstep::planner {

namespace {

struct node {
  bool is_op = true;
  uint32_t id = no_id;
};

} // namespace

critical_path critical_path_of(const plan& p, const cluster_config& config) {
  critical_path out;
  if (p.slot_ns == 0)
    return out;
  const auto& prog = p.decode;
  double slot_us = p.slot_ns / 1000.0;
  // The last op of the token: micro-batch 0's sample on the head host.
  node at{};
  uint32_t last_end = 0;
  for (const auto& o : prog.ops)
    if (o.micro_batch == 0 && o.kind == op_kind::sample &&
        o.start_slot + o.duration_slots >= last_end) {
      last_end = o.start_slot + o.duration_slots;
      at = {true, o.id};
    }
  if (at.id == no_id)
    return out;
  // Who ran just before each op on its chip and each transfer on its link.
  std::map<uint32_t, std::vector<uint32_t>> by_chip, by_link;
  std::vector<uint32_t> all_ops;
  for (const auto& o : prog.ops) {
    by_chip[o.chip].push_back(o.id);
    all_ops.push_back(o.id);
  }
  for (const auto& t : prog.transfers)
    by_link[t.link].push_back(t.id);
  auto op_end = [&](uint32_t i) {
    return prog.ops[i].start_slot + prog.ops[i].duration_slots;
  };
  auto tr_end = [&](uint32_t i) {
    return prog.transfers[i].start_slot + prog.transfers[i].duration_slots;
  };
  auto before = [&](const std::vector<uint32_t>& list, uint32_t start,
                    auto end_of) -> uint32_t {
    uint32_t best = no_id, best_end = 0;
    for (auto i : list)
      if (end_of(i) <= start && (best == no_id || end_of(i) > best_end)) {
        best = i;
        best_end = end_of(i);
      }
    return best;
  };
  topology topo{config};
  for (size_t guard = 0; guard < prog.ops.size() + prog.transfers.size(); ++guard) {
    uint32_t start = 0;
    std::vector<node> inputs;
    out.steps.push_back({at.is_op, at.id});
    if (at.is_op) {
      const auto& o = prog.ops[at.id];
      ++out.ops;
      double overhead_ns =
          std::min<double>(double(config.chip.op_overhead_ns), o.duration_ns);
      out.op_overhead_us += overhead_ns / 1000.0;
      out.compute_us += (o.duration_ns - overhead_ns) / 1000.0;
      out.rounding_us += o.duration_slots * slot_us - o.duration_ns / 1000.0;
      if (o.kind == op_kind::attention || o.kind == op_kind::mlp ||
          o.kind == op_kind::lm_head)
        ++out.compute_ops;
      start = o.start_slot;
      for (auto a : o.after_ops)
        inputs.push_back({true, a});
      for (auto t : o.after_transfers)
        inputs.push_back({false, t});
      if (auto prev = before(by_chip[o.chip], start, op_end); prev != no_id)
        inputs.push_back({true, prev}); // the chip was busy
      if (config.machine_cores > 0)
        if (auto prev = before(all_ops, start, op_end); prev != no_id)
          inputs.push_back({true, prev}); // every core was busy
    } else {
      const auto& t = prog.transfers[at.id];
      ++out.hops;
      const auto& prof = topo.profile(t.link);
      double ns = double(prof.latency_ns) + t.bytes / prof.bytes_per_s * 1e9;
      out.link_latency_us += prof.latency_ns / 1000.0;
      out.link_bytes_us += (ns - prof.latency_ns) / 1000.0;
      out.rounding_us += std::max(0.0, t.duration_slots * slot_us - ns / 1000.0);
      start = t.start_slot;
      if (t.after_op != no_id)
        inputs.push_back({true, t.after_op});
      if (t.after_transfer != no_id)
        inputs.push_back({false, t.after_transfer});
      if (auto prev = before(by_link[t.link], start, tr_end); prev != no_id)
        inputs.push_back({false, prev}); // the link was busy
    }
    // Follow the input that finished last (the one that set the start).
    node next{};
    uint32_t next_end = 0;
    for (const auto& in : inputs) {
      uint32_t e = in.is_op ? op_end(in.id) : tr_end(in.id);
      if (next.id == no_id || e > next_end) {
        next = in;
        next_end = e;
      }
    }
    if (next.id == no_id) {
      out.waiting_us += start * slot_us;
      break;
    }
    out.waiting_us += (start - next_end) * slot_us;
    at = next;
  }
  std::reverse(out.steps.begin(), out.steps.end());
  return out;
}

step_work step_work_of(const plan& p, const cluster_config& config) {
  step_work w;
  for (const auto& o : p.decode.ops) {
    if (config.is_host_node(o.chip))
      continue;
    double overhead_ns =
        std::min<double>(double(config.chip.op_overhead_ns), o.duration_ns);
    w.op_overhead_us += overhead_ns / 1000.0;
    w.kernel_us += (o.duration_ns - overhead_ns) / 1000.0;
    ++w.ops;
  }
  if (config.machine_cores > 0) {
    topology topo{config};
    for (const auto& t : p.decode.transfers)
      if (uint64_t cpu = topo.profile(t.link).cpu_ns; cpu > 0) {
        w.transfer_cpu_us += cpu / 1000.0;
        ++w.cpu_transfers;
      }
  }
  return w;
}

} // namespace lockstep::planner
