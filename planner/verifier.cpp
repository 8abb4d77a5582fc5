#include "planner/verifier.hpp"

#include "model/block_rule.hpp"
#include "planner/detail/verify_context.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace lockstep::planner {

const char* to_string(op_kind k) {
  switch (k) {
  case op_kind::embed:
    return "embed";
  case op_kind::gather:
    return "gather";
  case op_kind::attention:
    return "attention";
  case op_kind::mlp:
    return "mlp";
  case op_kind::combine:
    return "combine";
  case op_kind::final_norm:
    return "final_norm";
  case op_kind::lm_head:
    return "lm_head";
  case op_kind::forward:
    return "forward";
  case op_kind::feed:
    return "feed";
  case op_kind::select:
    return "select";
  case op_kind::sample:
    return "sample";
  }
  return "unknown";
}

const char* to_string(program_kind k) {
  return k == program_kind::decode ? "decode" : "prefill";
}

uint64_t step_program::transfer_bytes() const {
  uint64_t total = 0;
  for (const auto& t : transfers)
    total += t.bytes;
  return total;
}

namespace {

// The plan-level rules: nodes and spares, weights placed exactly once and
// consistently counted, KV slices where attention needs them.
class plan_checker {
public:
  explicit plan_checker(detail::verify_context& v)
      : v_(v)
      , p_(v.p)
      , c_(v.c) {}

  void run() {
    check_nodes();
    check_coverage();
    check_usage();
  }

private:
  void check_nodes() {
    if (p_.usage.size() != c_.node_count())
      v_.fail("ids", "usage for " + std::to_string(p_.usage.size()) +
                         " nodes, the cluster has " +
                         std::to_string(c_.node_count()));
    if (!c_.is_host_node(p_.sampler))
      v_.fail("token-loop", "the sampler " + v_.node(p_.sampler) +
                                " is not a host endpoint");
    // Spares the plan keeps free must be spares of the cluster; a spare may
    // only leave that list to replace a failed chip.
    std::set<uint32_t> config_spares(c_.spares.begin(), c_.spares.end());
    for (auto s : p_.spares)
      if (!config_spares.contains(s))
        v_.fail("spares", "chip " + v_.node(s) +
                              " is listed as a spare but is not one in " +
                              c_.name);
    if (c_.spares.size() > p_.spares.size() + p_.failed_chips.size())
      v_.fail("spares", std::to_string(c_.spares.size() - p_.spares.size()) +
                            " spares taken for " +
                            std::to_string(p_.failed_chips.size()) +
                            " failed chips");
    std::set<uint32_t> off(p_.spares.begin(), p_.spares.end());
    off.insert(p_.failed_chips.begin(), p_.failed_chips.end());
    for (auto kind : {program_kind::decode, program_kind::prefill})
      for (const auto& o : p_.program(kind).ops)
        if (off.contains(o.chip))
          v_.fail("spares", v_.op_name(p_.program(kind), o) +
                                ": runs on a spare or failed chip");
    for (const auto& s : p_.shards)
      if (s.chip >= c_.chip_count() || off.contains(s.chip))
        v_.fail("spares", "shard " + model::to_string(s.tensor) + " on " +
                              v_.node(s.chip) +
                              ": not a chip the plan may use");
    for (const auto& kv : p_.kv_slices)
      if (kv.chip >= c_.chip_count() || off.contains(kv.chip))
        v_.fail("spares", "KV slice of layer " + std::to_string(kv.layer) +
                              " on " + v_.node(kv.chip) +
                              ": not a chip the plan may use");
  }

  void check_coverage() {
    std::map<std::pair<uint32_t, uint8_t>, std::vector<const shard*>> by_tensor;
    for (const auto& s : p_.shards) {
      auto shape = model::shape_of(p_.spec, s.tensor.kind);
      if (auto err = model::check_shard(shape, s.range))
        v_.fail("coverage", "shard " + model::to_string(s.tensor) + " on " + v_.node(s.chip) +
             ": " + detail_of(err));
      by_tensor[{s.tensor.layer, static_cast<uint8_t>(s.tensor.kind)}]
          .push_back(&s);
    }
    for (auto id : model::all_tensors(p_.spec)) {
      auto it = by_tensor.find({id.layer, static_cast<uint8_t>(id.kind)});
      if (it == by_tensor.end()) {
        v_.fail("coverage", "tensor " + model::to_string(id) + " is not placed");
        continue;
      }
      if (model::is_norm(id.kind))
        continue; // norms are replicated whole where needed
      auto shape = model::shape_of(p_.spec, id.kind);
      uint64_t area = 0;
      const auto& list = it->second;
      for (size_t i = 0; i < list.size(); ++i) {
        const auto& a = list[i]->range;
        area += uint64_t{a.rows()} * a.cols();
        for (size_t j = i + 1; j < list.size(); ++j) {
          const auto& b = list[j]->range;
          bool overlap = a.row_begin < b.row_end && b.row_begin < a.row_end &&
                         a.col_begin < b.col_end && b.col_begin < a.col_end;
          // K/V rows of a KV head shared by two chips' query heads are
          // replicated (GQA); any other overlap is a double placement.
          bool kv = id.kind == model::tensor_kind::wk ||
                    id.kind == model::tensor_kind::wv;
          if (overlap && !kv)
            v_.fail("coverage", "tensor " + model::to_string(id) + " placed twice (on " +
                 v_.node(list[i]->chip) + " and " + v_.node(list[j]->chip) + ")");
        }
      }
      bool kv = id.kind == model::tensor_kind::wk ||
                id.kind == model::tensor_kind::wv;
      if (kv ? area < shape.elements() : area != shape.elements())
        v_.fail("coverage", "tensor " + model::to_string(id) + ": shards cover " +
             std::to_string(area) + " of " + std::to_string(shape.elements()) +
             " elements");
    }
  }


  // What usage reports is what the shards and slices hold.
  void check_usage() {
    std::vector<uint64_t> weights(c_.node_count(), 0), kv(c_.node_count(), 0);
    for (const auto& s : p_.shards)
      if (s.chip < weights.size())
        weights[s.chip] += s.bytes;
    for (const auto& k : p_.kv_slices)
      if (k.chip < kv.size())
        kv[k.chip] += 2 * k.bytes_each(p_.spec.head_dim);
    for (uint32_t c = 0; c < c_.chip_count() && c < p_.usage.size(); ++c) {
      if (weights[c] != p_.usage[c].weight_bytes ||
          kv[c] != p_.usage[c].kv_bytes)
        v_.fail("usage", v_.node(c) + ": usage says " +
                             std::to_string(p_.usage[c].weight_bytes) +
                             " weight and " +
                             std::to_string(p_.usage[c].kv_bytes) +
                             " KV bytes, its shards and slices hold " +
                             std::to_string(weights[c]) + " and " +
                             std::to_string(kv[c]));
      if (p_.usage[c].total() > c_.chip.sram_bytes)
        v_.fail("capacity", v_.node(c) + ": needs " +
                                std::to_string(p_.usage[c].total()) +
                                " bytes of SRAM, has " +
                                std::to_string(c_.chip.sram_bytes));
    }
  }

  detail::verify_context& v_;
  const plan& p_;
  const cluster_config& c_;
};

} // namespace

verify_report verify_plan(const plan& p, const cluster_config& config,
                          size_t max_violations) {
  verify_report report;
  detail::verify_context v{p, config, max_violations, report};
  // Every check divides by the model's shapes: a corrupt spec stops here.
  if (auto err = model::validate(p.spec)) {
    v.fail("ids", "the plan's model spec: " + render(err));
    return report;
  }
  plan_checker{v}.run();
  for (auto kind : {program_kind::decode, program_kind::prefill}) {
    const auto& prog = p.program(kind);
    if (prog.ops.empty()) {
      v.fail(kind == program_kind::decode ? "token-loop" : "prefill",
             std::string{"the "} + to_string(kind) + " program is missing");
      continue;
    }
    if (!detail::verify_schedule(v, prog))
      continue; // broken ids: the rest would index out of range
    detail::verify_dataflow(v, prog);
    detail::verify_memory(v, prog);
  }
  return report;
}

} // namespace lockstep::planner
