// The verifier's timing half: links, slots, conflicts, routes, windows, the
// period, and the determinism rule of every combine. Shares no code with
// the builder.

#include "planner/detail/verify_context.hpp"

#include "model/block_rule.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace lockstep::planner::detail {

namespace {

class schedule_checker {
public:
  schedule_checker(verify_context& v, const step_program& prog)
      : v_(v)
      , p_(v.p)
      , c_(v.c)
      , prog_(prog) {}

  bool run() {
    if (!check_ids())
      return false;
    check_transfers();
    check_ops();
    check_windows();
    check_period();
    for (const auto& o : prog_.ops)
      if (o.kind == op_kind::combine)
        check_combine(o);
    check_partial_readers();
    return true;
  }

private:
  std::string op_name(const op& o) const { return v_.op_name(prog_, o); }
  std::string tr_name(const transfer& t) const { return v_.tr_name(prog_, t); }
  std::string node(uint32_t n) const { return v_.node(n); }
  static uint64_t end(const op& o) { return verify_context::end(o); }
  static uint64_t end(const transfer& t) { return verify_context::end(t); }

  bool check_ids() {
    bool ok = true;
    auto bad = [&](const std::string& what) {
      v_.fail("ids", std::string{to_string(prog_.kind)} + " " + what);
      ok = false;
    };
    for (size_t i = 0; i < prog_.ops.size(); ++i)
      if (prog_.ops[i].id != i)
        bad("op at index " + std::to_string(i) + " has id " +
            std::to_string(prog_.ops[i].id));
    for (size_t i = 0; i < prog_.transfers.size(); ++i)
      if (prog_.transfers[i].id != i)
        bad("transfer at index " + std::to_string(i) + " has id " +
            std::to_string(prog_.transfers[i].id));
    uint32_t n = c_.node_count();
    for (const auto& o : prog_.ops) {
      if (o.chip >= n) {
        bad(op_name(o) + ": no such node");
        continue;
      }
      bool host_op = o.kind == op_kind::feed || o.kind == op_kind::sample;
      if (host_op != c_.is_host_node(o.chip))
        bad(op_name(o) + (host_op ? ": a host op on a chip"
                                  : ": a chip op on a host endpoint"));
      for (auto a : o.after_ops)
        if (a >= prog_.ops.size())
          bad(op_name(o) + ": unknown dependency");
      for (auto t : o.after_transfers)
        if (t >= prog_.transfers.size())
          bad(op_name(o) + ": unknown input transfer");
    }
    for (const auto& t : prog_.transfers) {
      if (t.src >= n || t.dst >= n || t.link >= 2 * c_.links.size())
        bad(tr_name(t) + ": no such node or link " + std::to_string(t.link));
      if (t.after_op >= prog_.ops.size() ||
          (t.after_transfer != no_id &&
           t.after_transfer >= prog_.transfers.size()) ||
          t.consumer_op >= prog_.ops.size())
        bad(tr_name(t) + ": unknown producer, previous hop or consumer");
    }
    if (prog_.arenas.size() != n)
      bad("arenas for " + std::to_string(prog_.arenas.size()) + " nodes, " +
          std::to_string(n) + " in the cluster");
    if (prog_.micro_batches == 0 ||
        prog_.micro_batch_sequences.size() != prog_.micro_batches + 1)
      bad("micro-batch table of " +
          std::to_string(prog_.micro_batch_sequences.size()) +
          " entries for " + std::to_string(prog_.micro_batches) +
          " micro-batches");
    for (const auto& o : prog_.ops)
      if (o.micro_batch >= prog_.micro_batches)
        bad(op_name(o) + ": no such micro-batch");
    return ok;
  }

  void check_transfers() {
    std::map<uint32_t, std::vector<const transfer*>> by_link;
    for (const auto& t : prog_.transfers) {
      const auto& l = c_.links[t.link / 2];
      uint32_t a = t.link % 2 == 0 ? l.a : l.b;
      uint32_t b = t.link % 2 == 0 ? l.b : l.a;
      if (a != t.src || b != t.dst)
        v_.fail("link", tr_name(t) + ": link " + std::to_string(t.link) +
                            " connects " + node(a) + "->" + node(b));
      if (t.bytes != transport::framed_bytes(t.payload_bytes))
        v_.fail("transfer-size", tr_name(t) + ": " + std::to_string(t.bytes) +
                                     " bytes is not the framed size of its "
                                     "payload");
      const auto& prof = c_.link_profiles[l.profile];
      double need_ns = prof.latency_ns + t.bytes / prof.bytes_per_s * 1e9;
      if (double(t.duration_slots) * p_.slot_ns + 0.5 < need_ns)
        v_.fail("link-capacity",
                tr_name(t) + ": " + std::to_string(t.bytes) + " bytes need " +
                    std::to_string(uint64_t(need_ns)) + " ns on this link, " +
                    "scheduled for " +
                    std::to_string(t.duration_slots * p_.slot_ns) + " ns");
      if (end(t) > prog_.slots_per_step)
        v_.fail("step", tr_name(t) + ": ends after slot " +
                            std::to_string(prog_.slots_per_step));
      if (t.dst_offsets.empty() || t.dst_offsets.size() > 8)
        v_.fail("windows", tr_name(t) + ": needs 1..8 receive buffers");
      by_link[t.link].push_back(&t);
      // Producer and route continuity.
      const auto& prod = prog_.ops[t.after_op];
      if (prod.chip != t.src)
        v_.fail("route", tr_name(t) + ": produced by " + op_name(prod) +
                             " on another node");
      if (t.start_slot < end(prod))
        v_.fail("dependency", tr_name(t) + ": starts before its producer " +
                                  op_name(prod) + " ends");
      if (t.after_transfer != no_id) {
        const auto& hop = prog_.transfers[t.after_transfer];
        if (hop.dst != t.src)
          v_.fail("route", tr_name(t) + ": route broken: previous hop " +
                               tr_name(hop) + " ends elsewhere");
        if (prod.kind != op_kind::forward ||
            std::find(prod.after_transfers.begin(), prod.after_transfers.end(),
                      hop.id) == prod.after_transfers.end())
          v_.fail("route", tr_name(t) + ": not forwarded from its previous hop");
      }
      // Consumer; alternating buffers are rewritten `buffers` periods later.
      const auto& cons = prog_.ops[t.consumer_op];
      if (cons.chip != t.dst ||
          std::find(cons.after_transfers.begin(), cons.after_transfers.end(),
                    t.id) == cons.after_transfers.end())
        v_.fail("consumer", tr_name(t) + ": its consumer " + op_name(cons) +
                                " does not read it on " + node(t.dst));
      uint64_t reuse = uint64_t{t.start_slot} +
                       uint64_t{prog_.period_slots} * t.dst_offsets.size();
      if (end(cons) > reuse)
        v_.fail("buffer-reuse", tr_name(t) + ": buffer rewritten at slot " +
                                    std::to_string(reuse) +
                                    " before its consumer " + op_name(cons) +
                                    " ends");
    }
    for (auto& [link, list] : by_link) {
      std::sort(list.begin(), list.end(),
                [](auto* x, auto* y) { return x->start_slot < y->start_slot; });
      for (size_t i = 1; i < list.size(); ++i)
        if (list[i]->start_slot < end(*list[i - 1]))
          v_.fail("link-conflict",
                  "link " + node(list[i]->src) + "->" + node(list[i]->dst) +
                      " carries " + tr_name(*list[i - 1]) + " and " +
                      tr_name(*list[i]) + " in slot " +
                      std::to_string(list[i]->start_slot));
    }
  }

  void check_ops() {
    std::map<uint32_t, std::vector<const op*>> by_chip;
    for (const auto& o : prog_.ops) {
      by_chip[o.chip].push_back(&o);
      if (o.duration_slots == 0)
        v_.fail("step", op_name(o) + ": zero duration");
      if (end(o) > prog_.slots_per_step)
        v_.fail("step", op_name(o) + ": ends after slot " +
                            std::to_string(prog_.slots_per_step));
      for (auto a : o.after_ops) {
        const auto& d = prog_.ops[a];
        if (d.chip != o.chip)
          v_.fail("dependency", op_name(o) + ": depends on " + op_name(d) +
                                    " of another node without a transfer");
        if (o.start_slot < end(d))
          v_.fail("dependency",
                  op_name(o) + ": starts before " + op_name(d) + " ends");
      }
      for (auto t : o.after_transfers) {
        const auto& tr = prog_.transfers[t];
        if (tr.dst != o.chip)
          v_.fail("dependency",
                  op_name(o) + ": reads " + tr_name(tr) + " delivered elsewhere");
        if (o.start_slot < end(tr))
          v_.fail("dependency", op_name(o) + ": starts before its input " +
                                    tr_name(tr) + " completes");
      }
    }
    for (auto& [c, list] : by_chip) {
      std::sort(list.begin(), list.end(),
                [](auto* x, auto* y) { return x->start_slot < y->start_slot; });
      for (size_t i = 1; i < list.size(); ++i)
        if (list[i]->start_slot < end(*list[i - 1]))
          v_.fail("chip-conflict", node(c) + " runs " + op_name(*list[i - 1]) +
                                       " and " + op_name(*list[i]) +
                                       " at once");
    }
  }

  // The slot table's windows: 8-aligned, inside their arena, receive windows
  // disjoint; send windows disjoint unless identical (one output sent on
  // several links shares its framed window).
  void check_windows() {
    struct window {
      uint64_t begin, end;
      uint32_t transfer;
    };
    std::map<uint32_t, std::vector<window>> recv, send;
    for (const auto& t : prog_.transfers) {
      for (auto off : t.dst_offsets) {
        if (off % 8 != 0)
          v_.fail("windows", tr_name(t) + ": receive offset " +
                                 std::to_string(off) + " not 8-byte aligned");
        recv[t.dst].push_back({off, off + t.bytes, t.id});
      }
      if (t.src_offset % 8 != 0)
        v_.fail("windows", tr_name(t) + ": send offset not 8-byte aligned");
      send[t.src].push_back({t.src_offset, t.src_offset + t.bytes, t.id});
    }
    auto check = [&](std::map<uint32_t, std::vector<window>>& all, bool recv_side) {
      for (auto& [n, list] : all) {
        std::sort(list.begin(), list.end(), [](auto& x, auto& y) {
          return x.begin < y.begin || (x.begin == y.begin && x.end < y.end);
        });
        const auto& a = prog_.arenas[n];
        uint64_t limit = recv_side ? a.recv_bytes : a.send_bytes;
        for (size_t i = 0; i < list.size(); ++i) {
          if (list[i].end > limit)
            v_.fail("windows", "transfer " + std::to_string(list[i].transfer) +
                                   ": " + (recv_side ? "receive" : "send") +
                                   " window outside " + node(n) + "'s arena");
          if (i == 0 || list[i].begin >= list[i - 1].end)
            continue;
          if (!recv_side && list[i].begin == list[i - 1].begin &&
              list[i].end == list[i - 1].end)
            continue;
          v_.fail("windows", node(n) + ": " +
                                 (recv_side ? "receive" : "send") +
                                 " windows of transfers " +
                                 std::to_string(list[i - 1].transfer) +
                                 " and " + std::to_string(list[i].transfer) +
                                 " overlap");
        }
      }
    };
    check(recv, true);
    check(send, false);
  }

  // Steps start every period. Decode steps wait for the token loop: the
  // period is the program's length. Prefill chunks overlap: no node may run
  // two ops, and no link carry two transfers, at once across overlapping
  // steps, and a send window must not be rewritten before its transfers
  // end. (Buffers reused too early are memory-overlap violations.)
  void check_period() {
    uint32_t period = prog_.period_slots;
    auto bad = [&](const std::string& what) {
      v_.fail("period", std::string{to_string(prog_.kind)} + " program: " +
                            what);
    };
    if (period == 0 || period > prog_.slots_per_step) {
      bad("period of " + std::to_string(period) + " slots for a step of " +
          std::to_string(prog_.slots_per_step));
      return;
    }
    if (prog_.kind == program_kind::decode) {
      if (period != prog_.slots_per_step)
        bad("decode steps depend on the previous token: the period must be "
            "the step's " + std::to_string(prog_.slots_per_step) + " slots");
      return;
    }
    if (period == prog_.slots_per_step)
      return;
    // Folded onto one period, a node's ops (a link's transfers) must not
    // meet.
    auto collides = [&](std::vector<std::pair<uint64_t, uint64_t>> list) {
      std::vector<std::pair<uint64_t, uint64_t>> folded;
      for (auto [lo, hi] : list) {
        if (hi - lo > period)
          return true;
        uint64_t s = lo % period, e = s + (hi - lo);
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
    };
    std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> nodes,
        links;
    for (const auto& o : prog_.ops)
      nodes[o.chip].push_back({o.start_slot, end(o)});
    for (const auto& t : prog_.transfers) {
      links[t.link].push_back({t.start_slot, end(t)});
      const auto& prod = prog_.ops[t.after_op];
      if (end(t) > uint64_t{prod.start_slot} + period)
        bad(tr_name(t) + " still reads its send window when the next step's " +
            op_name(prod) + " rewrites it");
    }
    for (const auto& [n, list] : nodes)
      if (collides(list))
        bad(node(n) + " runs two ops at once when steps start every " +
            std::to_string(period) + " slots");
    for (const auto& [l, list] : links)
      if (collides(list))
        bad("link " + std::to_string(l) + " carries two transfers at once "
            "when steps start every " + std::to_string(period) + " slots");
  }

  // --- The determinism rule ---------------------------------------------

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
    for (size_t guard = 0; h->after_transfer != no_id &&
                           h->after_transfer < prog_.transfers.size() &&
                           guard < prog_.transfers.size();
         ++guard)
      h = &prog_.transfers[h->after_transfer];
    return *h;
  }

  // Parts tile a block range [b0, b1) on block boundaries and each part
  // sends exactly the maximal aligned power-of-two nodes of its range
  // (derived here independently of model::canonical_pieces).
  void check_combine(const op& o) {
    uint32_t nb = o.n_blocks;
    // A layer's two reductions: over q_dim (attention output) or d_ff.
    if (nb != model::blocks_of(p_.spec.q_dim()) &&
        nb != model::blocks_of(p_.spec.d_ff)) {
      v_.fail("combine-order",
              op_name(o) + ": " + std::to_string(nb) +
                  " reduction blocks is neither q_dim's nor d_ff's");
      return;
    }
    uint64_t span = 1;
    while (span < nb)
      span <<= 1;
    if (o.parts.empty()) {
      v_.fail("combine-order", op_name(o) + ": no reduction parts");
      return;
    }
    uint32_t at = o.parts.front().first_block;
    size_t node_i = 0;
    for (const auto& part : o.parts) {
      if (part.first_block != at || part.end_block <= part.first_block ||
          part.end_block > nb) {
        v_.fail("combine-order",
                op_name(o) + ": reduction parts do not tile blocks of [0, " +
                    std::to_string(nb) +
                    ") contiguously on block boundaries");
        return;
      }
      uint32_t pos = part.first_block;
      while (pos < part.end_block) {
        if (node_i >= o.nodes.size()) {
          v_.fail("combine-order", op_name(o) +
                                       ": missing tree nodes for the part on " +
                                       node(part.chip));
          return;
        }
        auto n = o.nodes[node_i++];
        bool pow2 = n.count != 0 && (n.count & (n.count - 1)) == 0;
        auto n_end = static_cast<uint32_t>(
            std::min<uint64_t>(uint64_t{n.first} + n.count, nb));
        uint64_t parent = uint64_t{n.count} * 2;
        bool parent_fits =
            pow2 && parent <= span && n.first % parent == 0 &&
            n.first >= part.first_block &&
            std::min<uint64_t>(n.first + parent, nb) <= part.end_block;
        if (n.first != pos || !pow2 || n.first % n.count != 0 ||
            n_end > part.end_block || parent_fits) {
          v_.fail("combine-order",
                  op_name(o) + ": node [" + std::to_string(n.first) + ", +" +
                      std::to_string(n.count) +
                      ") is not the canonical tree's maximal node at block " +
                      std::to_string(pos));
          return;
        }
        pos = n_end;
      }
      at = part.end_block;
    }
    if (node_i != o.nodes.size())
      v_.fail("combine-order", op_name(o) + ": extra tree nodes");
    if (o.out_first >= o.out_end || o.out_end > p_.spec.d_model)
      v_.fail("combine-order",
              op_name(o) + ": output elements [" + std::to_string(o.out_first) +
                  ", " + std::to_string(o.out_end) +
                  ") are not a slice of the " + std::to_string(p_.spec.d_model) +
                  "-element vector");
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
          if (prog_.ops[a].chip == o.chip && producer_ok(prog_.ops[a], part))
            found = true;
      } else {
        for (size_t i = 0; i < o.after_transfers.size() && !found; ++i) {
          if (used[i])
            continue;
          const auto& h = first_hop(prog_.transfers[o.after_transfers[i]]);
          if (h.src == part.chip && producer_ok(prog_.ops[h.after_op], part))
            found = used[i] = true;
        }
      }
      if (!found)
        v_.fail("combine-provenance",
                op_name(o) + ": no input carries the part of blocks [" +
                    std::to_string(part.first_block) + ", " +
                    std::to_string(part.end_block) + ") from " +
                    node(part.chip));
    }
    for (size_t i = 0; i < used.size(); ++i)
      if (!used[i])
        v_.fail("combine-provenance",
                op_name(o) + ": incoming transfer " +
                    std::to_string(o.after_transfers[i]) + " carries no part");
  }

  // A partial combine's outputs are not x: only a root combine reads them
  // (on its own chip, or at the end of a route through forward ops).
  void check_partial_readers() {
    std::vector<uint32_t> next_hop(prog_.transfers.size(), no_id);
    for (const auto& t : prog_.transfers)
      if (t.after_transfer != no_id)
        next_hop[t.after_transfer] = t.id;
    auto reader_ok = [&](uint32_t reader) {
      return prog_.ops[reader].kind == op_kind::combine;
    };
    for (const auto& t : prog_.transfers) {
      if (t.after_transfer != no_id || !partial(prog_.ops[t.after_op]))
        continue;
      const transfer* last = &t;
      for (size_t guard = 0;
           guard < prog_.transfers.size() && next_hop[last->id] != no_id;
           ++guard)
        last = &prog_.transfers[next_hop[last->id]];
      if (!reader_ok(last->consumer_op))
        v_.fail("partial-readers", op_name(prog_.ops[t.after_op]) +
                                       ": partial sums read by " +
                                       op_name(prog_.ops[last->consumer_op]));
    }
    for (const auto& o : prog_.ops)
      for (auto a : o.after_ops)
        if (partial(prog_.ops[a]) && !reader_ok(o.id))
          v_.fail("partial-readers", op_name(prog_.ops[a]) +
                                         ": partial sums read by " +
                                         op_name(o));
  }

  verify_context& v_;
  const plan& p_;
  const cluster_config& c_;
  const step_program& prog_;
};

} // namespace

bool verify_schedule(verify_context& v, const step_program& prog) {
  schedule_checker c{v, prog};
  return c.run();
}

} // namespace lockstep::planner::detail
