#include "planner/detail/schedule_builder.hpp"

#include "planner/cost_model.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <set>

namespace lockstep::planner::detail {

namespace {

using model::tensor_kind;

uint64_t align8(uint64_t v) {
  return (v + 7) / 8 * 8;
}

// Where an activation is available on a chip: produced there by an op, or
// received there by a transfer.
struct avail {
  uint32_t chip = 0;
  uint32_t op = no_id;
  uint32_t tr = no_id;
};

class builder {
public:
  builder(const schedule_inputs& in, plan& p)
      : in_(in)
      , p_(p)
      , s_(*in.spec)
      , topo_(*in.topo)
      , cfg_(in.topo->config())
      , slot_ns_(cfg_.transport.slot_ns)
      , chip_free_(cfg_.chip_count(), 0)
      , link_free_(topo_.directed_link_count(), 0)
      , recv_top_(cfg_.chip_count(), 0)
      , send_top_(cfg_.chip_count(), 0) {}

  caf::error run();

private:
  uint32_t op_end(uint32_t id) const {
    return p_.ops[id].start_slot + p_.ops[id].duration_slots;
  }
  uint32_t tr_end(uint32_t id) const {
    return p_.transfers[id].start_slot + p_.transfers[id].duration_slots;
  }

  uint32_t add_op(op_kind kind, uint32_t chip, uint32_t layer, uint32_t mb,
                  op_cost cost, std::vector<uint32_t> after_ops,
                  std::vector<uint32_t> after_trs) {
    op o;
    o.id = static_cast<uint32_t>(p_.ops.size());
    o.kind = kind;
    o.chip = chip;
    o.layer = layer;
    o.micro_batch = mb;
    o.duration_ns = op_duration_ns(cfg_.chip, s_.weight_dtype, cost);
    o.duration_slots = to_slots(o.duration_ns, slot_ns_);
    uint32_t ready = chip_free_[chip];
    for (auto a : after_ops)
      ready = std::max(ready, op_end(a));
    for (auto t : after_trs) {
      ready = std::max(ready, tr_end(t));
      p_.transfers[t].consumer_op = o.id;
    }
    o.start_slot = ready;
    chip_free_[chip] = ready + o.duration_slots;
    o.after_ops = std::move(after_ops);
    o.after_transfers = std::move(after_trs);
    p_.ops.push_back(std::move(o));
    return p_.ops.back().id;
  }

  // Deps of an op on `chip` that reads `x`.
  void deps_on(const avail& x, std::vector<uint32_t>& ops,
               std::vector<uint32_t>& trs) {
    if (x.tr != no_id)
      trs.push_back(x.tr);
    else
      ops.push_back(x.op);
  }

  // Sends `payload` bytes produced by `producer` (an op on src) to dst along
  // a fewest-hops route; intermediate chips store and forward.
  caf::expected<uint32_t> send(uint32_t producer, uint32_t dst,
                               uint64_t payload, uint32_t layer, uint32_t mb) {
    uint32_t src = p_.ops[producer].chip;
    bool ok = true;
    auto route = topo_.route(src, dst, ok);
    if (!ok)
      return caf::make_error(errc::infeasible,
                             "no route from " +
                                 transport::to_string(cfg_.ref(src)) + " to " +
                                 transport::to_string(cfg_.ref(dst)));
    uint64_t bytes = transport::framed_bytes(payload);
    uint32_t prev_op = producer;
    uint32_t prev_tr = no_id;
    for (size_t h = 0; h < route.size(); ++h) {
      uint32_t d = route[h];
      uint32_t a = topo_.link_src(d), b = topo_.link_dst(d);
      if (h > 0)
        prev_op = add_op(op_kind::forward, a, layer, mb,
                         {2.0 * double(bytes), 0}, {}, {prev_tr});
      transfer t;
      t.id = static_cast<uint32_t>(p_.transfers.size());
      t.link = d;
      t.src = a;
      t.dst = b;
      t.payload_bytes = payload;
      t.bytes = bytes;
      t.duration_slots =
          to_slots(transfer_duration_ns(topo_.profile(d), bytes), slot_ns_);
      t.start_slot = std::max(op_end(prev_op), link_free_[d]);
      link_free_[d] = t.start_slot + t.duration_slots;
      t.after_op = prev_op;
      t.after_transfer = prev_tr;
      t.src_offset = send_top_[a];
      send_top_[a] += align8(bytes);
      t.dst_offsets = {recv_top_[b], recv_top_[b] + align8(bytes)};
      recv_top_[b] += 2 * align8(bytes);
      p_.transfers.push_back(std::move(t));
      prev_tr = p_.transfers.back().id;
    }
    return prev_tr;
  }

  // x available at `to`: itself if already there, else sent from x's op.
  caf::expected<avail> move_to(const avail& x, uint32_t to, uint64_t bytes,
                               uint32_t layer, uint32_t mb) {
    if (x.chip == to)
      return x;
    auto tr = send(materialise(x, layer, mb), to, bytes, layer, mb);
    if (!tr)
      return tr.error();
    return avail{to, no_id, *tr};
  }

  // An op that holds x in its chip's send arena (a received buffer is
  // copied once before it can be sent on).
  uint32_t materialise(const avail& x, uint32_t layer, uint32_t mb) {
    if (x.tr == no_id)
      return x.op;
    auto bytes = double(p_.transfers[x.tr].bytes);
    return add_op(op_kind::forward, x.chip, layer, mb, {2 * bytes, 0}, {},
                  {x.tr});
  }

  void add_shard(uint32_t chip, model::tensor_id id, model::shard_range r) {
    auto type = model::dtype_of(s_, id.kind);
    uint64_t bytes = uint64_t{r.rows()} * r.cols() * model::element_bytes(type);
    if (type == model::dtype::int8)
      bytes += uint64_t{r.rows()} * 4;
    p_.shards.push_back({chip, id, r, bytes});
    p_.usage[chip].weight_bytes += bytes;
  }

  void place_shards();
  // One layer on group g. x is on every chip of the group (exchange
  // all-reduce, groups within a node) or on its root only (gather and
  // broadcast, wider groups).
  caf::expected<std::vector<avail>> layer_step(uint32_t l,
                                               const std::vector<uint32_t>& g,
                                               std::vector<avail> xs,
                                               uint32_t rows, uint32_t mb);

  const schedule_inputs& in_;
  plan& p_;
  const model::model_spec& s_;
  topology& topo_;
  const cluster_config& cfg_;
  uint64_t slot_ns_;
  std::vector<uint32_t> chip_free_;
  std::vector<uint32_t> link_free_;
  std::vector<uint64_t> recv_top_;
  std::vector<uint64_t> send_top_;
};

void builder::place_shards() {
  const auto& pl = *in_.place;
  uint32_t k = pl.tp_degree;
  uint32_t hd = s_.head_dim;
  uint32_t group = s_.n_heads / s_.n_kv_heads;
  constexpr uint32_t B = model::reduction_block_elems;
  // Embedding rows (vocabulary) split across chips.
  for (size_t e = 0; e < pl.embed_chips.size(); ++e) {
    auto n = static_cast<uint32_t>(pl.embed_chips.size());
    auto r0 = static_cast<uint32_t>(uint64_t{s_.vocab} * e / n);
    auto r1 = static_cast<uint32_t>(uint64_t{s_.vocab} * (e + 1) / n);
    add_shard(pl.embed_chips[e],
              {model::global_layer, tensor_kind::tok_embedding},
              {r0, r1, 0, s_.d_model});
  }
  for (size_t g = 0; g < pl.groups.size(); ++g)
    for (uint32_t l = static_cast<uint32_t>(g * pl.layers_per_group);
         l <
         std::min<uint32_t>(
             s_.n_layers, static_cast<uint32_t>((g + 1) * pl.layers_per_group));
         ++l)
      for (uint32_t i = 0; i < k; ++i) {
        uint32_t c = pl.groups[g][i];
        auto [h0, h1] = head_range(s_, k, i);
        auto [f0, f1] = block_range(s_.d_ff, k, i, in_.place->aligned_splits);
        if (h1 > h0) {
          uint32_t kv0 = h0 / group, kv1 = (h1 - 1) / group + 1;
          add_shard(c, {l, tensor_kind::attn_norm}, {0, 1, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::wq}, {h0 * hd, h1 * hd, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::wk},
                    {kv0 * hd, kv1 * hd, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::wv},
                    {kv0 * hd, kv1 * hd, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::wo}, {0, s_.d_model, h0 * hd, h1 * hd});
          p_.usage[c].kv_bytes +=
              uint64_t{kv1 - kv0} * hd * 2 * 4 * in_.context * in_.batch;
        }
        if (f1 > f0) {
          add_shard(c, {l, tensor_kind::mlp_norm}, {0, 1, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::w_gate},
                    {f0 * B, f1 * B, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::w_up}, {f0 * B, f1 * B, 0, s_.d_model});
          add_shard(c, {l, tensor_kind::w_down},
                    {0, s_.d_model, f0 * B, f1 * B});
        }
      }
  add_shard(pl.groups.back()[0], {model::global_layer, tensor_kind::final_norm},
            {0, 1, 0, s_.d_model});
  for (size_t h = 0; h < pl.head_chips.size(); ++h) {
    auto n = static_cast<uint32_t>(pl.head_chips.size());
    auto r0 = static_cast<uint32_t>(uint64_t{s_.vocab} * h / n);
    auto r1 = static_cast<uint32_t>(uint64_t{s_.vocab} * (h + 1) / n);
    add_shard(pl.head_chips[h], {model::global_layer, tensor_kind::lm_head},
              {r0, r1, 0, s_.d_model});
  }
}

caf::expected<std::vector<avail>>
builder::layer_step(uint32_t l, const std::vector<uint32_t>& g,
                    std::vector<avail> xs, uint32_t rows, uint32_t mb) {
  auto k = static_cast<uint32_t>(g.size());
  uint32_t root = g[0];
  uint32_t hd = s_.head_dim;
  uint32_t group = s_.n_heads / s_.n_kv_heads;
  double elem = model::element_bytes(s_.weight_dtype);
  uint64_t act = uint64_t{s_.d_model} * rows * 4;
  double ctx = in_.context;
  uint32_t seqs = rows / in_.tokens;
  // xs holds x on every chip of the group (exchange) or on the root only.
  bool exchange = xs.size() == k && k > 1;

  for (int half = 0; half < 2; ++half) {
    bool attn = half == 0;
    uint32_t reduction = attn ? s_.q_dim() : s_.d_ff;
    // Chips with a part of this half (attention: those with heads).
    auto has_part = [&](uint32_t i) {
      if (!attn) {
        auto [f0, f1] = block_range(s_.d_ff, k, i, in_.place->aligned_splits);
        return f1 > f0;
      }
      auto [h0, h1] = head_range(s_, k, i);
      return h1 > h0;
    };
    std::vector<uint32_t> part_ops(k, no_id);
    uint32_t x_op_at_root = no_id;
    if (k > 1 && !exchange)
      x_op_at_root = materialise(xs[0], l, mb); // root broadcasts x
    for (uint32_t i = 0; i < k; ++i) {
      if (!has_part(i))
        continue;
      avail xi = xs[0];
      if (exchange) {
        xi = xs[i];
      } else if (k > 1) {
        auto moved = move_to({root, x_op_at_root, no_id}, g[i], act, l, mb);
        if (!moved)
          return moved.error();
        xi = *moved;
      }
      op_cost cost;
      if (attn) {
        auto [h0, h1] = head_range(s_, k, i);
        double kvh = (h1 - 1) / group - h0 / group + 1;
        double params = double(s_.d_model) * hd * (2.0 * (h1 - h0) + 2.0 * kvh);
        cost.bytes = params * elem + kvh * hd * 2 * 4 * ctx * seqs + 2.0 * act;
        cost.flops = 2.0 * params * rows + 4.0 * rows * ctx * (h1 - h0) * hd;
      } else {
        auto [f0, f1] = block_range(s_.d_ff, k, i, in_.place->aligned_splits);
        double params =
            3.0 * double(s_.d_model) * (f1 - f0) * model::reduction_block_elems;
        cost.bytes = params * elem + 2.0 * act;
        cost.flops = 2.0 * params * rows;
      }
      std::vector<uint32_t> ops, trs;
      deps_on(xi, ops, trs);
      part_ops[i] = add_op(attn ? op_kind::attention : op_kind::mlp, g[i], l,
                           mb, cost, ops, trs);
    }
    if (k == 1) {
      xs = {avail{root, part_ops[0], no_id}};
      continue;
    }
    // Which blocks each part holds, and the tree nodes it sends.
    uint32_t nb = model::blocks_of(reduction);
    std::vector<reduction_part> parts;
    std::vector<model::tree_node> nodes;
    std::vector<size_t> pieces_of(k, 0);
    for (uint32_t i = 0; i < k; ++i) {
      if (!has_part(i))
        continue;
      uint32_t b0, b1;
      if (attn) {
        auto [h0, h1] = head_range(s_, k, i);
        b0 = h0 * hd / model::reduction_block_elems;
        b1 = h1 * hd / model::reduction_block_elems;
      } else {
        std::tie(b0, b1) = block_range(s_.d_ff, k, i, in_.place->aligned_splits);
      }
      auto pieces = model::canonical_pieces(nb, b0, b1);
      parts.push_back({g[i], b0, b1});
      nodes.insert(nodes.end(), pieces.begin(), pieces.end());
      pieces_of[i] = pieces.size();
    }
    double in_bytes = double(act) * nodes.size();
    // Combine on `chip j`: its own part (if any) and every other part's
    // partials, in canonical order, plus the residual x held there.
    auto combine_on =
        [&](uint32_t j,
            std::vector<uint32_t> after_ops) -> caf::expected<uint32_t> {
      std::vector<uint32_t> trs;
      for (uint32_t i = 0; i < k; ++i) {
        if (i == j || part_ops[i] == no_id)
          continue;
        auto tr = send(part_ops[i], g[j], act * pieces_of[i], l, mb);
        if (!tr)
          return tr.error();
        trs.push_back(*tr);
      }
      if (part_ops[j] != no_id)
        after_ops.push_back(part_ops[j]);
      uint32_t c = add_op(op_kind::combine, g[j], l, mb,
                          {in_bytes + act, in_bytes / 4}, after_ops, trs);
      p_.ops[c].n_blocks = nb;
      p_.ops[c].parts = parts;
      p_.ops[c].nodes = nodes;
      return c;
    };
    if (exchange) {
      // All-reduce as an exchange: every chip gets every partial over its
      // direct node links and combines itself; x stays on every chip, so
      // the next half needs no broadcast.
      std::vector<avail> next(k);
      for (uint32_t j = 0; j < k; ++j) {
        std::vector<uint32_t> after;
        if (xs[j].op != no_id)
          after.push_back(xs[j].op); // the residual
        auto c = combine_on(j, after);
        if (!c)
          return c.error();
        next[j] = {g[j], *c, no_id};
      }
      xs = std::move(next);
    } else {
      auto c = combine_on(0, {});
      if (!c)
        return c.error();
      xs = {avail{root, *c, no_id}};
    }
  }
  return xs;
}

caf::error builder::run() {
  const auto& pl = *in_.place;
  p_.usage.assign(cfg_.chip_count(), {});
  place_shards();
  uint32_t mbs = in_.micro_batches;
  for (uint32_t mb = 0; mb < mbs; ++mb) {
    uint32_t seqs = in_.batch * (mb + 1) / mbs - in_.batch * mb / mbs;
    if (seqs == 0)
      continue;
    uint32_t rows = seqs * in_.tokens;
    uint64_t act = uint64_t{s_.d_model} * rows * 4;
    // Embedding: each chip holds a row slice of the table and sends a full
    // activation buffer with the rows of the tokens it owns; the first
    // root picks, per token, the buffer of the owning chip (a selection, no
    // arithmetic: the bits are the table's).
    uint32_t root0 = pl.groups[0][0];
    std::vector<uint32_t> ops, trs;
    for (size_t e = 0; e < pl.embed_chips.size(); ++e) {
      uint64_t bytes = act;
      uint32_t o = add_op(op_kind::embed, pl.embed_chips[e],
                          model::global_layer, mb, {2.0 * bytes, 0}, {}, {});
      if (pl.embed_chips[e] == root0) {
        ops.push_back(o);
        continue;
      }
      auto tr = send(o, root0, bytes, model::global_layer, mb);
      if (!tr)
        return tr.error();
      trs.push_back(*tr);
    }
    avail x{root0,
            add_op(op_kind::gather, root0, model::global_layer, mb,
                   {2.0 * act, 0}, ops, trs),
            no_id};
    std::vector<avail> xs{x};
    for (size_t g = 0; g < pl.groups.size(); ++g) {
      const auto& grp = pl.groups[g];
      auto k = static_cast<uint32_t>(grp.size());
      // Groups inside a node all-reduce by exchange: x goes to every chip
      // (same-index chips of the previous group send in parallel).
      bool exchange = k > 1 && k <= cfg_.chips_per_node;
      std::vector<avail> in;
      for (uint32_t j = 0; j < (exchange ? k : 1); ++j) {
        const avail& from = xs.size() == k ? xs[j] : xs[0];
        auto moved = move_to(from, grp[j], act, model::global_layer, mb);
        if (!moved)
          return moved.error();
        avail a = *moved;
        if (exchange && a.tr != no_id) // held in the send arena from now on
          a = {grp[j], materialise(a, model::global_layer, mb), no_id};
        in.push_back(a);
      }
      xs = std::move(in);
      for (uint32_t l = static_cast<uint32_t>(g * pl.layers_per_group);
           l < std::min<uint32_t>(
                   s_.n_layers,
                   static_cast<uint32_t>((g + 1) * pl.layers_per_group));
           ++l) {
        auto next = layer_step(l, grp, xs, rows, mb);
        if (!next)
          return next.error();
        xs = std::move(*next);
      }
    }
    x = xs[0];
    // Final norm on the last root; LM-head row slices; logits gathered on
    // the first head chip for the coordinator to sample.
    std::vector<uint32_t> fops, ftrs;
    deps_on(x, fops, ftrs);
    uint32_t fn = add_op(op_kind::final_norm, x.chip, model::global_layer, mb,
                         {3.0 * act, 2.0 * act / 4}, fops, ftrs);
    avail xf{x.chip, fn, no_id};
    uint32_t head0 = pl.head_chips[0];
    std::vector<uint32_t> gops, gtrs;
    for (size_t h = 0; h < pl.head_chips.size(); ++h) {
      auto n = static_cast<uint32_t>(pl.head_chips.size());
      auto r0 = static_cast<uint32_t>(uint64_t{s_.vocab} * h / n);
      auto r1 = static_cast<uint32_t>(uint64_t{s_.vocab} * (h + 1) / n);
      auto in = move_to(xf, pl.head_chips[h], act, model::global_layer, mb);
      if (!in)
        return in.error();
      std::vector<uint32_t> hops, htrs;
      deps_on(*in, hops, htrs);
      double params = double(r1 - r0) * s_.d_model;
      uint32_t o = add_op(
          op_kind::lm_head, pl.head_chips[h], model::global_layer, mb,
          {params * model::element_bytes(s_.weight_dtype), 2.0 * params * rows},
          hops, htrs);
      if (pl.head_chips[h] == head0) {
        gops.push_back(o);
        continue;
      }
      auto tr =
          send(o, head0, uint64_t{r1 - r0} * rows * 4, model::global_layer, mb);
      if (!tr)
        return tr.error();
      gtrs.push_back(*tr);
    }
    add_op(op_kind::gather, head0, model::global_layer, mb,
           {2.0 * s_.vocab * rows * 4, 0}, gops, gtrs);
  }
  uint32_t end = 0;
  for (const auto& o : p_.ops)
    end = std::max(end, o.start_slot + o.duration_slots);
  for (const auto& t : p_.transfers)
    end = std::max(end, t.start_slot + t.duration_slots);
  p_.slots_per_step = end;
  for (uint32_t c = 0; c < cfg_.chip_count(); ++c) {
    p_.usage[c].recv_arena_bytes = recv_top_[c];
    p_.usage[c].send_arena_bytes = send_top_[c];
  }
  std::set<uint32_t> used;
  for (const auto& sh : p_.shards)
    used.insert(sh.chip);
  for (const auto& o : p_.ops)
    used.insert(o.chip);
  p_.chips_used.assign(used.begin(), used.end());
  return {};
}

} // namespace

caf::error build_schedule(const schedule_inputs& in, plan& out) {
  builder b{in, out};
  return b.run();
}

} // namespace lockstep::planner::detail
