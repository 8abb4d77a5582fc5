#include "planner/detail/schedule_builder.hpp"

#include "planner/cost_model.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <limits>
#include <queue>
#include <set>
#include <tuple>
#include <unordered_map>

namespace lockstep::planner::detail {

namespace {

using model::tensor_kind;

uint64_t align8(uint64_t v) {
  return (v + 7) / 8 * 8;
}

// A store-and-forward copy reads and writes the framed bytes once.
op_cost forward_cost(uint64_t framed_bytes) {
  return {2.0 * double(framed_bytes), 0};
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
      // Per node, not per chip: a route's end may be a host endpoint (no
      // schedule sends there yet, but a link to one exists from every chip).
      , chip_free_(cfg_.node_count(), 0)
      , link_free_(topo_.directed_link_count(), 0)
      , recv_top_(cfg_.node_count(), 0)
      , send_top_(cfg_.node_count(), 0) {}

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

  // The route src -> dst on which `bytes` leaving at `ready` arrive first,
  // given the links and relays already booked: an earliest-arrival search
  // over routes of at most the fewest hops (+1 when that is more than one
  // hop, so traffic can spread over parallel paths). Ties go to the lower
  // link id: deterministic.
  std::vector<uint32_t> earliest_route(uint32_t src, uint32_t dst,
                                       uint64_t bytes, uint32_t ready,
                                       bool& ok);

  // Sends `payload` bytes produced by `producer` (an op on src) to dst along
  // the earliest-arriving short route; intermediate chips store and forward.
  caf::expected<uint32_t> send(uint32_t producer, uint32_t dst,
                               uint64_t payload, uint32_t layer, uint32_t mb) {
    uint32_t src = p_.ops[producer].chip;
    bool ok = true;
    auto route = earliest_route(src, dst, transport::framed_bytes(payload),
                                op_end(producer), ok);
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
                         forward_cost(bytes), {}, {prev_tr});
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
    return add_op(op_kind::forward, x.chip, layer, mb,
                  forward_cost(p_.transfers[x.tr].bytes), {}, {x.tr});
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

  // A group's chips as `subs` sub-groups of `s` consecutive chips (one node
  // each when the group spans nodes): the d_model vector is cut into `s`
  // slices, and chip j of every sub-group owns slice j.
  struct group_view {
    const std::vector<uint32_t>* chips = nullptr;
    uint32_t k = 1, s = 1, subs = 1;
    uint32_t at(uint32_t q, uint32_t j) const { return (*chips)[q * s + j]; }
  };
  group_view view_of(const std::vector<uint32_t>& g) const {
    auto k = static_cast<uint32_t>(g.size());
    uint32_t s = std::max(1u, std::min(k, cfg_.chips_per_node));
    return {&g, k, s, (k + s - 1) / s};
  }
  std::pair<uint32_t, uint32_t> slice(uint32_t j, uint32_t s) const {
    return {static_cast<uint32_t>(uint64_t{s_.d_model} * j / s),
            static_cast<uint32_t>(uint64_t{s_.d_model} * (j + 1) / s)};
  }
  uint64_t slice_bytes(uint32_t j, uint32_t s, uint32_t rows) const {
    auto [e0, e1] = slice(j, s);
    return uint64_t{e1 - e0} * rows * 4;
  }

  // A reduction input: blocks [b0, b1) whose canonical pieces are held (for
  // every element) by `op` on `chip`.
  struct input {
    uint32_t chip = 0, op = no_id, b0 = 0, b1 = 0;
  };
  caf::expected<uint32_t> combine_slice(uint32_t t, uint32_t j, uint32_t s,
                                        const std::vector<input>& inputs,
                                        uint32_t residual, uint32_t rows,
                                        uint32_t nb, uint32_t layer,
                                        uint32_t mb);
  // Reduce-scatter of one reduction: returns, per chip of the group, the
  // combine op holding its slice of x (root combine + residual).
  caf::expected<std::vector<uint32_t>>
  reduce_scatter(const group_view& v, const std::vector<input>& parts,
                 const std::vector<uint32_t>& full, uint32_t nb, uint32_t rows,
                 uint32_t layer, uint32_t mb);
  // All-gather inside each sub-group: every chip (or, with `only_first`,
  // chip 0 of the group) assembles full x from the slice holders.
  caf::expected<std::vector<avail>>
  all_gather(const group_view& v, const std::vector<uint32_t>& slices,
             uint32_t rows, uint32_t mb, bool only_first = false);
  // One layer on a group; `full` holds x on every chip, the result holds
  // the slices of the layer's output (no all-gather after the last half).
  caf::expected<std::vector<uint32_t>> layer_step(uint32_t l,
                                                  const group_view& v,
                                                  std::vector<avail> full,
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

std::vector<uint32_t> builder::earliest_route(uint32_t src, uint32_t dst,
                                              uint64_t bytes, uint32_t ready,
                                              bool& ok) {
  ok = true;
  if (src == dst)
    return {};
  if (auto d = topo_.find(src, dst); d >= 0)
    return {static_cast<uint32_t>(d)}; // one hop: the only route that short
  const auto& hops = topo_.hops_to(dst);
  if (hops[src] == topology::no_route) {
    ok = false;
    return {};
  }
  uint32_t limit = hops[src] + (hops[src] > 1 ? 1 : 0);
  uint32_t fwd_slots = to_slots(
      op_duration_ns(cfg_.chip, s_.weight_dtype, forward_cost(bytes)),
      slot_ns_);
  // State: (chip, hops taken). Labels are arrival slots.
  struct label {
    uint32_t arrive = 0;
    uint32_t link = no_id;  // link taken into this state
    uint32_t prev = no_id;  // previous state index
  };
  std::unordered_map<uint64_t, uint32_t> index; // (chip << 8 | hops) -> state
  std::vector<label> labels;
  std::vector<uint64_t> keys;
  using entry = std::tuple<uint32_t, uint32_t, uint32_t>; // arrive, link, state
  std::priority_queue<entry, std::vector<entry>, std::greater<>> queue;
  auto state_of = [&](uint32_t chip, uint32_t h) {
    uint64_t key = uint64_t{chip} << 8 | h;
    auto [it, fresh] = index.try_emplace(key, uint32_t(labels.size()));
    if (fresh) {
      labels.push_back({std::numeric_limits<uint32_t>::max(), no_id, no_id});
      keys.push_back(key);
    }
    return it->second;
  };
  uint32_t start = state_of(src, 0);
  labels[start].arrive = ready;
  queue.push({ready, no_id, start});
  uint32_t found = no_id;
  while (!queue.empty()) {
    auto [arrive, via, st] = queue.top();
    queue.pop();
    if (arrive != labels[st].arrive || via != labels[st].link)
      continue; // superseded
    auto chip = static_cast<uint32_t>(keys[st] >> 8);
    auto h = static_cast<uint32_t>(keys[st] & 0xFF);
    if (chip == dst) {
      found = st;
      break;
    }
    // Leaving a relay takes a forward op once the chip is free.
    uint32_t leave = arrive;
    if (chip != src)
      leave = std::max(arrive, chip_free_[chip]) + fwd_slots;
    for (uint32_t d : topo_.out_links(chip)) {
      uint32_t next = topo_.link_dst(d);
      if (hops[next] == topology::no_route || h + 1 + hops[next] > limit)
        continue;
      if (next != dst && !topo_.may_relay(next))
        continue; // spares, failed chips and host endpoints never relay
      uint32_t t0 = std::max(leave, link_free_[d]);
      uint32_t t1 =
          t0 + to_slots(transfer_duration_ns(topo_.profile(d), bytes), slot_ns_);
      uint32_t ns = state_of(next, h + 1);
      auto& l = labels[ns];
      if (t1 < l.arrive || (t1 == l.arrive && d < l.link)) {
        l = {t1, d, st};
        queue.push({t1, d, ns});
      }
    }
  }
  if (found == no_id) {
    ok = false;
    return {};
  }
  std::vector<uint32_t> path;
  for (uint32_t st = found; labels[st].prev != no_id; st = labels[st].prev)
    path.push_back(labels[st].link);
  std::reverse(path.begin(), path.end());
  return path;
}

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
        auto [h0, h1] = head_range(s_, k, i, in_.place->aligned_splits);
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

caf::expected<uint32_t>
builder::combine_slice(uint32_t t, uint32_t j, uint32_t s,
                       const std::vector<input>& inputs, uint32_t residual,
                       uint32_t rows, uint32_t nb, uint32_t layer,
                       uint32_t mb) {
  uint64_t sb = slice_bytes(j, s, rows);
  std::vector<uint32_t> after_ops, trs;
  std::vector<reduction_part> parts;
  std::vector<model::tree_node> nodes;
  for (const auto& in : inputs) {
    auto pieces = model::canonical_pieces(nb, in.b0, in.b1);
    if (in.chip == t) {
      after_ops.push_back(in.op);
    } else {
      auto tr = send(in.op, t, sb * pieces.size(), layer, mb);
      if (!tr)
        return tr.error();
      trs.push_back(*tr);
    }
    parts.push_back({in.chip, in.b0, in.b1});
    nodes.insert(nodes.end(), pieces.begin(), pieces.end());
  }
  if (residual != no_id)
    after_ops.push_back(residual);
  double in_bytes = double(sb) * nodes.size();
  uint32_t c = add_op(op_kind::combine, t, layer, mb,
                      {in_bytes + (residual != no_id ? 2.0 * sb : sb),
                       in_bytes / 4},
                      std::move(after_ops), std::move(trs));
  auto& o = p_.ops[c];
  o.n_blocks = nb;
  o.parts = std::move(parts);
  o.nodes = std::move(nodes);
  std::tie(o.out_first, o.out_end) = slice(j, s);
  return c;
}

caf::expected<std::vector<uint32_t>>
builder::reduce_scatter(const group_view& v, const std::vector<input>& parts,
                        const std::vector<uint32_t>& full, uint32_t nb,
                        uint32_t rows, uint32_t layer, uint32_t mb) {
  // parts[i] is chip i's part (op == no_id: none).
  auto sub_parts = [&](uint32_t q) {
    std::vector<input> out;
    for (uint32_t j = 0; j < v.s && q * v.s + j < v.k; ++j)
      if (parts[q * v.s + j].op != no_id)
        out.push_back(parts[q * v.s + j]);
    return out;
  };
  std::vector<uint32_t> slices(v.k, no_id);
  uint32_t subs_with_parts = 0;
  for (uint32_t q = 0; q < v.subs; ++q)
    subs_with_parts += sub_parts(q).empty() ? 0 : 1;
  if (subs_with_parts <= 1) {
    // One level (one node, or parts on one node only — few heads): chip i
    // combines slice i % s of every part, plus the residual.
    std::vector<input> all;
    for (const auto& in : parts)
      if (in.op != no_id)
        all.push_back(in);
    for (uint32_t i = 0; i < v.k; ++i) {
      auto c = combine_slice((*v.chips)[i], i % v.s, v.s, all, full[i], rows,
                             nb, layer, mb);
      if (!c)
        return c.error();
      slices[i] = *c;
    }
    return slices;
  }
  // Two levels: inside each sub-group, chip j combines slice j of the
  // sub-group's parts into the canonical pieces of its block range; then
  // chip j of every sub-group combines those pieces (same-index chips of
  // the sub-groups are neighbours) into the root, plus the residual.
  std::vector<std::vector<input>> level1(v.subs);
  for (uint32_t q = 0; q < v.subs; ++q) {
    auto in = sub_parts(q);
    if (in.empty())
      continue;
    for (uint32_t j = 0; j < v.s; ++j) {
      uint32_t t = v.at(q, j);
      auto c = combine_slice(t, j, v.s, in, no_id, rows, nb, layer, mb);
      if (!c)
        return c.error();
      level1[q].push_back({t, *c, in.front().b0, in.back().b1});
    }
  }
  for (uint32_t q = 0; q < v.subs; ++q)
    for (uint32_t j = 0; j < v.s; ++j) {
      std::vector<input> in;
      for (uint32_t r = 0; r < v.subs; ++r)
        if (!level1[r].empty())
          in.push_back(level1[r][j]);
      uint32_t i = q * v.s + j;
      auto c = combine_slice(v.at(q, j), j, v.s, in, full[i], rows, nb, layer,
                             mb);
      if (!c)
        return c.error();
      slices[i] = *c;
    }
  return slices;
}

caf::expected<std::vector<avail>>
builder::all_gather(const group_view& v, const std::vector<uint32_t>& slices,
                    uint32_t rows, uint32_t mb, bool only_first) {
  std::vector<avail> full(v.k);
  uint64_t act = uint64_t{s_.d_model} * rows * 4;
  for (uint32_t q = 0; q < v.subs; ++q)
    for (uint32_t j = 0; j < v.s; ++j) {
      if (only_first && (q > 0 || j > 0))
        return full;
      uint32_t t = v.at(q, j);
      std::vector<uint32_t> trs;
      for (uint32_t o = 0; o < v.s; ++o) {
        if (o == j)
          continue;
        auto tr = send(slices[q * v.s + o], t, slice_bytes(o, v.s, rows),
                       model::global_layer, mb);
        if (!tr)
          return tr.error();
        trs.push_back(*tr);
      }
      full[q * v.s + j] = {t,
                           add_op(op_kind::gather, t, model::global_layer, mb,
                                  {2.0 * act, 0}, {slices[q * v.s + j]}, trs),
                           no_id};
    }
  return full;
}

caf::expected<std::vector<uint32_t>>
builder::layer_step(uint32_t l, const group_view& v, std::vector<avail> full,
                    uint32_t rows, uint32_t mb) {
  uint32_t k = v.k;
  uint32_t hd = s_.head_dim;
  uint32_t group = s_.n_heads / s_.n_kv_heads;
  double elem = model::element_bytes(s_.weight_dtype);
  uint64_t act = uint64_t{s_.d_model} * rows * 4;
  double ctx = in_.context;
  uint32_t seqs = rows / in_.tokens;
  std::vector<uint32_t> slices;
  for (int half = 0; half < 2; ++half) {
    bool attn = half == 0;
    uint32_t nb = model::blocks_of(attn ? s_.q_dim() : s_.d_ff);
    std::vector<input> parts(k);
    for (uint32_t i = 0; i < k; ++i) {
      auto [b0, b1] = part_blocks(s_, k, i, in_.place->aligned_splits, attn);
      op_cost cost;
      if (attn) {
        auto [h0, h1] = head_range(s_, k, i, in_.place->aligned_splits);
        double kvh = h1 > h0 ? (h1 - 1) / group - h0 / group + 1 : 0;
        double params = double(s_.d_model) * hd * (2.0 * (h1 - h0) + 2.0 * kvh);
        cost.bytes = params * elem + kvh * hd * 2 * 4 * ctx * seqs + 2.0 * act;
        cost.flops = 2.0 * params * rows + 4.0 * rows * ctx * (h1 - h0) * hd;
      } else {
        double params =
            3.0 * double(s_.d_model) * (b1 - b0) * model::reduction_block_elems;
        cost.bytes = params * elem + 2.0 * act;
        cost.flops = 2.0 * params * rows;
      }
      if (b1 <= b0)
        continue; // no heads / no MLP rows on this chip
      std::vector<uint32_t> ops, trs;
      deps_on(full[i], ops, trs);
      uint32_t o = add_op(attn ? op_kind::attention : op_kind::mlp,
                          (*v.chips)[i], l, mb, cost, ops, trs);
      parts[i] = {(*v.chips)[i], o, b0, b1};
    }
    if (k == 1) {
      full = {avail{(*v.chips)[0], parts[0].op, no_id}};
      slices = {parts[0].op};
      continue;
    }
    std::vector<uint32_t> residual(k);
    for (uint32_t i = 0; i < k; ++i)
      residual[i] = full[i].op;
    auto sl = reduce_scatter(v, parts, residual, nb, rows, l, mb);
    if (!sl)
      return sl.error();
    slices = std::move(*sl);
    if (attn) {
      auto f = all_gather(v, slices, rows, mb);
      if (!f)
        return f.error();
      full = std::move(*f);
    }
  }
  return slices;
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
    uint32_t x0 = add_op(op_kind::gather, root0, model::global_layer, mb,
                         {2.0 * act, 0}, ops, trs);
    // x enters each group on every chip: the first root broadcasts it to
    // the first group; later, chip i of a group hands its slice of the
    // previous group's output to chip i of the next, which all-gathers.
    std::vector<uint32_t> slices; // per chip of the previous group
    avail x{root0, x0, no_id};
    for (size_t g = 0; g < pl.groups.size(); ++g) {
      auto v = view_of(pl.groups[g]);
      std::vector<avail> full(v.k);
      if (g == 0) {
        for (uint32_t i = 0; i < v.k; ++i) {
          auto moved = move_to(x, v.at(0, i), act, model::global_layer, mb);
          if (!moved)
            return moved.error();
          full[i] = *moved;
        }
        // A combine's residual must be an op on its chip.
        if (v.k > 1)
          for (auto& f : full)
            if (f.tr != no_id)
              f = {f.chip, materialise(f, model::global_layer, mb), no_id};
      } else {
        std::vector<uint32_t> in(v.k);
        for (uint32_t i = 0; i < v.k; ++i) {
          uint64_t bytes = v.k == 1 ? act : slice_bytes(i % v.s, v.s, rows);
          auto tr = send(slices[i], v.at(0, i), bytes, model::global_layer, mb);
          if (!tr)
            return tr.error();
          full[i] = {v.at(0, i), no_id, *tr};
          if (v.k > 1) // held in the send arena, for the all-gather
            in[i] = materialise(full[i], model::global_layer, mb);
        }
        if (v.k > 1) {
          auto f = all_gather(v, in, rows, mb);
          if (!f)
            return f.error();
          full = std::move(*f);
        }
      }
      auto first = static_cast<uint32_t>(g * pl.layers_per_group);
      auto last = std::min<uint32_t>(
          s_.n_layers, static_cast<uint32_t>((g + 1) * pl.layers_per_group));
      for (uint32_t l = first; l < last; ++l) {
        if (l > first) {
          if (v.k == 1) {
            full = {avail{v.at(0, 0), slices[0], no_id}};
          } else {
            auto f = all_gather(v, slices, rows, mb);
            if (!f)
              return f.error();
            full = std::move(*f);
          }
        }
        auto next = layer_step(l, v, full, rows, mb);
        if (!next)
          return next.error();
        slices = std::move(*next);
      }
    }
    if (auto v = view_of(pl.groups.back()); v.k == 1) {
      x = {v.at(0, 0), slices[0], no_id};
    } else {
      auto f = all_gather(v, slices, rows, mb, /*only_first=*/true);
      if (!f)
        return f.error();
      x = (*f)[0];
    }
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
