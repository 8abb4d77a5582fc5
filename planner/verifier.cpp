#include "planner/verifier.hpp"

#include "model/block_rule.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <cmath>
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
  }
  return "unknown";
}

namespace {

class checker {
public:
  checker(const plan& p, const cluster_config& c, size_t max)
      : p_(p)
      , c_(c)
      , max_(max) {}

  verify_report run() {
    check_ids();
    if (!report_.ok())
      return report_; // later checks index by id
    check_chips();
    check_transfers();
    check_ops();
    check_arenas();
    check_capacity();
    check_coverage();
    check_combines();
    return report_;
  }

private:
  void fail(const std::string& what) {
    if (report_.violations.size() < max_)
      report_.violations.push_back(what);
  }
  std::string chip(uint32_t c) const {
    return c < c_.node_count() ? transport::to_string(c_.ref(c))
                               : "chip#" + std::to_string(c);
  }
  std::string op_name(const op& o) const {
    return "op " + std::to_string(o.id) + " (" + to_string(o.kind) + " on " +
           chip(o.chip) + ", slots " + std::to_string(o.start_slot) + "+" +
           std::to_string(o.duration_slots) + ")";
  }
  std::string tr_name(const transfer& t) const {
    return "transfer " + std::to_string(t.id) + " (" + chip(t.src) + "->" +
           chip(t.dst) + ", slots " + std::to_string(t.start_slot) + "+" +
           std::to_string(t.duration_slots) + ")";
  }
  uint32_t end(const op& o) const { return o.start_slot + o.duration_slots; }
  uint32_t end(const transfer& t) const {
    return t.start_slot + t.duration_slots;
  }

  void check_ids() {
    for (size_t i = 0; i < p_.ops.size(); ++i)
      if (p_.ops[i].id != i)
        fail("op at index " + std::to_string(i) + " has id " +
             std::to_string(p_.ops[i].id));
    for (size_t i = 0; i < p_.transfers.size(); ++i)
      if (p_.transfers[i].id != i)
        fail("transfer at index " + std::to_string(i) + " has id " +
             std::to_string(p_.transfers[i].id));
    uint32_t n = c_.chip_count();
    for (const auto& o : p_.ops)
      if (o.chip >= n)
        fail(op_name(o) + (c_.is_host_node(o.chip)
                               ? ": a host endpoint, not a chip"
                               : ": no such chip"));
    // A transfer's end may be a host endpoint (links to hosts exist); its
    // link must be one of the config's.
    for (const auto& t : p_.transfers)
      if (t.src >= c_.node_count() || t.dst >= c_.node_count() ||
          t.link >= 2 * c_.links.size())
        fail(tr_name(t) + ": no such chip or link");
    if (p_.usage.size() != n)
      fail("usage has " + std::to_string(p_.usage.size()) + " chips, cluster " +
           std::to_string(n));
  }

  void check_chips() {
    // Spares the plan keeps free must be spares of the cluster; a spare may
    // only leave that list to replace a failed chip.
    std::set<uint32_t> config_spares(c_.spares.begin(), c_.spares.end());
    for (auto s : p_.spares)
      if (!config_spares.contains(s))
        fail("chip " + chip(s) + " is listed as a spare but is not one in " +
             c_.name);
    if (c_.spares.size() > p_.spares.size() + p_.failed_chips.size())
      fail(std::to_string(c_.spares.size() - p_.spares.size()) +
           " spares taken for " + std::to_string(p_.failed_chips.size()) +
           " failed chips");
    std::set<uint32_t> off(p_.spares.begin(), p_.spares.end());
    off.insert(p_.failed_chips.begin(), p_.failed_chips.end());
    for (const auto& o : p_.ops)
      if (off.contains(o.chip))
        fail(op_name(o) + ": runs on a spare or failed chip");
    for (const auto& s : p_.shards)
      if (off.contains(s.chip))
        fail("shard " + model::to_string(s.tensor) + " on " + chip(s.chip) +
             ": a spare or failed chip");
  }

  void check_transfers() {
    std::map<uint32_t, std::vector<const transfer*>> by_link;
    for (const auto& t : p_.transfers) {
      const auto& l = c_.links[t.link / 2];
      uint32_t a = t.link % 2 == 0 ? l.a : l.b;
      uint32_t b = t.link % 2 == 0 ? l.b : l.a;
      if (a != t.src || b != t.dst)
        fail(tr_name(t) + ": link " + std::to_string(t.link) + " connects " +
             chip(a) + "->" + chip(b));
      if (t.bytes != transport::framed_bytes(t.payload_bytes))
        fail(tr_name(t) + ": " + std::to_string(t.bytes) +
             " bytes is not the framed size of its payload");
      const auto& prof = c_.link_profiles[l.profile];
      double need_ns = prof.latency_ns + t.bytes / prof.bytes_per_s * 1e9;
      if (double(t.duration_slots) * p_.slot_ns + 0.5 < need_ns)
        fail(tr_name(t) + ": " + std::to_string(t.bytes) + " bytes need " +
             std::to_string(uint64_t(need_ns)) + " ns on this link, " +
             "scheduled for " + std::to_string(t.duration_slots * p_.slot_ns) +
             " ns");
      if (end(t) > p_.slots_per_step)
        fail(tr_name(t) + ": ends after slot " +
             std::to_string(p_.slots_per_step));
      if (t.dst_offsets.empty() || t.dst_offsets.size() > 8)
        fail(tr_name(t) + ": needs 1..8 receive buffers");
      by_link[t.link].push_back(&t);
      // Producer and route continuity.
      if (t.after_op >= p_.ops.size()) {
        fail(tr_name(t) + ": no producing op");
      } else {
        const auto& prod = p_.ops[t.after_op];
        if (prod.chip != t.src)
          fail(tr_name(t) + ": produced by " + op_name(prod) +
               " on another chip");
        if (t.start_slot < end(prod))
          fail(tr_name(t) + ": starts before its producer " + op_name(prod) +
               " ends");
        if (t.after_transfer != no_id) {
          if (t.after_transfer >= p_.transfers.size()) {
            fail(tr_name(t) + ": unknown previous hop");
          } else {
            const auto& hop = p_.transfers[t.after_transfer];
            if (hop.dst != t.src)
              fail(tr_name(t) + ": route broken: previous hop " + tr_name(hop) +
                   " ends elsewhere");
            if (prod.kind != op_kind::forward ||
                std::find(prod.after_transfers.begin(),
                          prod.after_transfers.end(),
                          hop.id) == prod.after_transfers.end())
              fail(tr_name(t) + ": not forwarded from its previous hop");
          }
        }
      }
      // Consumer; alternating buffers are rewritten two steps later.
      if (t.consumer_op >= p_.ops.size()) {
        fail(tr_name(t) + ": nobody reads it");
      } else {
        const auto& cons = p_.ops[t.consumer_op];
        if (cons.chip != t.dst ||
            std::find(cons.after_transfers.begin(), cons.after_transfers.end(),
                      t.id) == cons.after_transfers.end())
          fail(tr_name(t) + ": its consumer " + op_name(cons) +
               " does not read it on " + chip(t.dst));
        uint64_t reuse = uint64_t{t.start_slot} +
                         uint64_t{p_.slots_per_step} * t.dst_offsets.size();
        if (end(cons) > reuse)
          fail(tr_name(t) + ": buffer rewritten at slot " +
               std::to_string(reuse) + " before its consumer " + op_name(cons) +
               " ends");
      }
    }
    for (auto& [link, list] : by_link) {
      std::sort(list.begin(), list.end(),
                [](auto* x, auto* y) { return x->start_slot < y->start_slot; });
      for (size_t i = 1; i < list.size(); ++i)
        if (list[i]->start_slot < end(*list[i - 1]))
          fail("link " + chip(list[i]->src) + "->" + chip(list[i]->dst) +
               " carries " + tr_name(*list[i - 1]) + " and " +
               tr_name(*list[i]) + " in slot " +
               std::to_string(list[i]->start_slot));
    }
  }

  void check_ops() {
    std::map<uint32_t, std::vector<const op*>> by_chip;
    for (const auto& o : p_.ops) {
      by_chip[o.chip].push_back(&o);
      if (o.duration_slots == 0)
        fail(op_name(o) + ": zero duration");
      if (end(o) > p_.slots_per_step)
        fail(op_name(o) + ": ends after slot " +
             std::to_string(p_.slots_per_step));
      for (auto a : o.after_ops) {
        if (a >= p_.ops.size()) {
          fail(op_name(o) + ": unknown dependency");
          continue;
        }
        const auto& d = p_.ops[a];
        if (d.chip != o.chip)
          fail(op_name(o) + ": depends on " + op_name(d) +
               " of another chip without a transfer");
        if (o.start_slot < end(d))
          fail(op_name(o) + ": starts before " + op_name(d) + " ends");
      }
      for (auto t : o.after_transfers) {
        if (t >= p_.transfers.size()) {
          fail(op_name(o) + ": unknown input transfer");
          continue;
        }
        const auto& tr = p_.transfers[t];
        if (tr.dst != o.chip)
          fail(op_name(o) + ": reads " + tr_name(tr) + " delivered elsewhere");
        if (o.start_slot < end(tr))
          fail(op_name(o) + ": starts before its input " + tr_name(tr) +
               " completes");
      }
    }
    for (auto& [c, list] : by_chip) {
      std::sort(list.begin(), list.end(),
                [](auto* x, auto* y) { return x->start_slot < y->start_slot; });
      for (size_t i = 1; i < list.size(); ++i)
        if (list[i]->start_slot < end(*list[i - 1]))
          fail("chip " + chip(c) + " runs " + op_name(*list[i - 1]) + " and " +
               op_name(*list[i]) + " at once");
    }
  }

  void check_arenas() {
    struct window {
      uint64_t begin, end;
      uint32_t transfer;
    };
    std::map<uint32_t, std::vector<window>> recv;
    for (const auto& t : p_.transfers) {
      for (auto off : t.dst_offsets) {
        if (off % 8 != 0)
          fail(tr_name(t) + ": receive offset " + std::to_string(off) +
               " not 8-byte aligned");
        recv[t.dst].push_back({off, off + t.bytes, t.id});
      }
      if (t.src < p_.usage.size() &&
          t.src_offset + t.bytes > p_.usage[t.src].send_arena_bytes)
        fail(tr_name(t) + ": send window outside " + chip(t.src) +
             "'s send arena");
    }
    for (auto& [c, list] : recv) {
      std::sort(list.begin(), list.end(),
                [](auto& x, auto& y) { return x.begin < y.begin; });
      for (size_t i = 0; i < list.size(); ++i) {
        // usage covers chips only: a host endpoint's receive buffers are in
        // host memory, not SRAM, and the plan does not size them (yet).
        if (c < p_.usage.size() && list[i].end > p_.usage[c].recv_arena_bytes)
          fail("transfer " + std::to_string(list[i].transfer) +
               ": receive window outside " + chip(c) + "'s arena");
        if (i > 0 && list[i].begin < list[i - 1].end)
          fail(chip(c) + ": receive windows of transfers " +
               std::to_string(list[i - 1].transfer) + " and " +
               std::to_string(list[i].transfer) + " overlap");
      }
    }
  }

  void check_capacity() {
    std::vector<uint64_t> weights(c_.chip_count(), 0);
    for (const auto& s : p_.shards)
      if (s.chip < weights.size())
        weights[s.chip] += s.bytes;
    for (uint32_t c = 0; c < c_.chip_count(); ++c) {
      if (weights[c] != p_.usage[c].weight_bytes)
        fail(chip(c) + ": usage says " +
             std::to_string(p_.usage[c].weight_bytes) +
             " weight bytes, shards hold " + std::to_string(weights[c]));
      if (p_.usage[c].total() > c_.chip.sram_bytes)
        fail(chip(c) + ": needs " + std::to_string(p_.usage[c].total()) +
             " bytes of SRAM, has " + std::to_string(c_.chip.sram_bytes));
    }
  }

  void check_coverage() {
    std::map<std::pair<uint32_t, uint8_t>, std::vector<const shard*>> by_tensor;
    for (const auto& s : p_.shards) {
      auto shape = model::shape_of(p_.spec, s.tensor.kind);
      if (auto err = model::check_shard(shape, s.range))
        fail("shard " + model::to_string(s.tensor) + " on " + chip(s.chip) +
             ": " + detail_of(err));
      by_tensor[{s.tensor.layer, static_cast<uint8_t>(s.tensor.kind)}]
          .push_back(&s);
    }
    for (auto id : model::all_tensors(p_.spec)) {
      auto it = by_tensor.find({id.layer, static_cast<uint8_t>(id.kind)});
      if (it == by_tensor.end()) {
        fail("tensor " + model::to_string(id) + " is not placed");
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
            fail("tensor " + model::to_string(id) + " placed twice (on " +
                 chip(list[i]->chip) + " and " + chip(list[j]->chip) + ")");
        }
      }
      bool kv = id.kind == model::tensor_kind::wk ||
                id.kind == model::tensor_kind::wv;
      if (kv ? area < shape.elements() : area != shape.elements())
        fail("tensor " + model::to_string(id) + ": shards cover " +
             std::to_string(area) + " of " + std::to_string(shape.elements()) +
             " elements");
    }
  }

  // The determinism rule: parts tile a block range [b0, b1) on block
  // boundaries and each part sends exactly the maximal aligned power-of-two
  // nodes of its range (derived here independently of
  // model::canonical_pieces). Parts over all blocks make a root combine;
  // parts over a sub-range make a partial combine, whose outputs (the
  // maximal nodes of [b0, b1)) may only feed a root combine that lists them
  // as one part.
  void check_combines() {
    for (const auto& o : p_.ops)
      if (o.kind == op_kind::combine)
        check_combine(o);
    check_partial_readers();
  }

  static std::pair<uint32_t, uint32_t> range_of(const op& o) {
    if (o.parts.empty())
      return {0, 0};
    return {o.parts.front().first_block, o.parts.back().end_block};
  }
  bool partial(const op& o) const {
    auto [b0, b1] = range_of(o);
    return o.kind == op_kind::combine && !(b0 == 0 && b1 == o.n_blocks);
  }

  // The op whose output a transfer carries: the producer of its first hop.
  const transfer& first_hop(const transfer& t) const {
    const transfer* h = &t;
    for (size_t guard = 0;
         h->after_transfer != no_id && h->after_transfer < p_.transfers.size() &&
         guard < p_.transfers.size();
         ++guard)
      h = &p_.transfers[h->after_transfer];
    return *h;
  }

  void check_combine(const op& o) {
    uint32_t nb = o.n_blocks;
    uint32_t span = 1;
    while (span < nb)
      span <<= 1;
    if (o.parts.empty()) {
      fail(op_name(o) + ": no reduction parts");
      return;
    }
    uint32_t at = o.parts.front().first_block;
    size_t node = 0;
    for (const auto& part : o.parts) {
      if (part.first_block != at || part.end_block <= part.first_block ||
          part.end_block > nb) {
        fail(op_name(o) + ": reduction parts do not tile blocks of [0, " +
             std::to_string(nb) + ") contiguously on block boundaries");
        return;
      }
      uint32_t pos = part.first_block;
      while (pos < part.end_block) {
        if (node >= o.nodes.size()) {
          fail(op_name(o) + ": missing tree nodes for the part on " +
               chip(part.chip));
          return;
        }
        auto n = o.nodes[node++];
        bool pow2 = n.count != 0 && (n.count & (n.count - 1)) == 0;
        uint32_t n_end = std::min(n.first + n.count, nb);
        uint32_t parent = n.count * 2;
        bool parent_fits = parent <= span && n.first % parent == 0 &&
                           n.first >= part.first_block &&
                           std::min(n.first + parent, nb) <= part.end_block;
        if (n.first != pos || !pow2 || n.first % n.count != 0 ||
            n_end > part.end_block || parent_fits) {
          fail(op_name(o) + ": node [" + std::to_string(n.first) + ", +" +
               std::to_string(n.count) +
               ") is not the canonical tree's maximal node at block " +
               std::to_string(pos));
          return;
        }
        pos = n_end;
      }
      at = part.end_block;
    }
    if (node != o.nodes.size())
      fail(op_name(o) + ": extra tree nodes");
    if (o.out_first >= o.out_end || o.out_end > p_.spec.d_model)
      fail(op_name(o) + ": output elements [" + std::to_string(o.out_first) +
           ", " + std::to_string(o.out_end) + ") are not a slice of the " +
           std::to_string(p_.spec.d_model) + "-element vector");
    check_provenance(o);
  }

  // Each part's values come from an op of the same layer on the part's chip:
  // remote parts by exactly one incoming transfer each, local ones by a
  // same-chip dependency. A part produced by a partial combine must be
  // exactly that combine's range and output slice.
  void check_provenance(const op& o) {
    auto producer_ok = [&](const op& src, const reduction_part& part) {
      if (src.layer != o.layer || src.micro_batch != o.micro_batch)
        return false;
      if (src.kind == op_kind::attention || src.kind == op_kind::mlp)
        return true;
      if (src.kind != op_kind::combine || !partial(src))
        return false;
      auto [b0, b1] = range_of(src);
      return b0 == part.first_block && b1 == part.end_block &&
             src.out_first == o.out_first && src.out_end == o.out_end;
    };
    std::vector<bool> used(o.after_transfers.size(), false);
    for (const auto& part : o.parts) {
      bool found = false;
      if (part.chip == o.chip) {
        for (auto a : o.after_ops)
          if (a < p_.ops.size() && p_.ops[a].chip == o.chip &&
              producer_ok(p_.ops[a], part))
            found = true;
      } else {
        for (size_t i = 0; i < o.after_transfers.size() && !found; ++i) {
          if (used[i] || o.after_transfers[i] >= p_.transfers.size())
            continue;
          const auto& h = first_hop(p_.transfers[o.after_transfers[i]]);
          if (h.src == part.chip && h.after_op < p_.ops.size() &&
              producer_ok(p_.ops[h.after_op], part))
            found = used[i] = true;
        }
      }
      if (!found)
        fail(op_name(o) + ": no input carries the part of blocks [" +
             std::to_string(part.first_block) + ", " +
             std::to_string(part.end_block) + ") from " + chip(part.chip));
    }
    for (size_t i = 0; i < used.size(); ++i)
      if (!used[i])
        fail(op_name(o) + ": incoming transfer " +
             std::to_string(o.after_transfers[i]) + " carries no part");
  }

  // A partial combine's outputs are not x: only a root combine reads them
  // (on its own chip, or at the end of a route through forward ops).
  void check_partial_readers() {
    std::vector<uint32_t> next_hop(p_.transfers.size(), no_id);
    for (const auto& t : p_.transfers)
      if (t.after_transfer < p_.transfers.size())
        next_hop[t.after_transfer] = t.id;
    auto reader_ok = [&](uint32_t reader) {
      return reader >= p_.ops.size() ||
             p_.ops[reader].kind == op_kind::combine;
    };
    for (const auto& t : p_.transfers) {
      if (t.after_transfer != no_id || t.after_op >= p_.ops.size() ||
          !partial(p_.ops[t.after_op]))
        continue;
      const transfer* last = &t;
      for (size_t guard = 0;
           guard < p_.transfers.size() && next_hop[last->id] != no_id; ++guard)
        last = &p_.transfers[next_hop[last->id]];
      if (!reader_ok(last->consumer_op))
        fail(op_name(p_.ops[t.after_op]) + ": partial sums read by " +
             op_name(p_.ops[last->consumer_op]));
    }
    for (const auto& o : p_.ops)
      for (auto a : o.after_ops)
        if (a < p_.ops.size() && partial(p_.ops[a]) && !reader_ok(o.id))
          fail(op_name(p_.ops[a]) + ": partial sums read by " + op_name(o));
  }

  const plan& p_;
  const cluster_config& c_;
  size_t max_;
  verify_report report_;
};

} // namespace

verify_report verify_plan(const plan& p, const cluster_config& config,
                          size_t max_violations) {
  checker c{p, config, max_violations};
  return c.run();
}

} // namespace lockstep::planner
