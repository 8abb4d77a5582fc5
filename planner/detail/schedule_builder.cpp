#include "planner/detail/schedule_builder.hpp"

#include "model/shard_ops.hpp"
#include "planner/cost_model.hpp"
#include "planner/detail/core_timeline.hpp"
#include "planner/detail/route_search.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <cassert>
#include <limits>
#include <map>
#include <queue>
#include <tuple>
#include <unordered_map>

namespace lockstep::planner::detail {

namespace {

using model::tensor_kind;

// A store-and-forward copy reads and writes the framed bytes once.
op_cost forward_cost(uint64_t framed_bytes) {
  return {2.0 * double(framed_bytes), 0};
}

// A value available on a node: output `output` of op `op` there, or the
// payload of transfer `tr` that arrived there.
struct avail {
  uint32_t chip = 0;
  uint32_t op = no_id;
  uint32_t output = 0;
  uint32_t tr = no_id;
};

class builder {
public:
  builder(const schedule_inputs& in, step_program& p)
      : in_(in)
      , p_(p)
      , s_(*in.spec)
      , topo_(*in.topo)
      , cfg_(in.topo->config())
      , slot_ns_(cfg_.transport.slot_ns)
      , chip_free_(cfg_.node_count(), 0)
      , link_free_(topo_.directed_link_count(), 0)
      , cores_(cfg_.machine_cores) {
    const auto& shards = in.placed->shards;
    for (uint32_t i = 0; i < shards.size(); ++i)
      shard_index_[key(shards[i].chip, shards[i].tensor.layer,
                       shards[i].tensor.kind)] = i;
    const auto& kv = in.placed->kv_slices;
    for (uint32_t i = 0; i < kv.size(); ++i)
      kv_index_[key(kv[i].chip, kv[i].layer, tensor_kind::wk)] = i;
  }

  caf::error run();
  /// Whether the build stopped at in.stop_at_slot.
  bool stopped() const { return stopped_; }

private:
  // Everything ending at or after in.stop_at_slot makes the step too long.
  void note_end(uint32_t end) {
    if (in_.stop_at_slot != 0 && end >= in_.stop_at_slot)
      stopped_ = true;
  }
  static uint64_t key(uint32_t chip, uint32_t layer, tensor_kind kind) {
    return uint64_t{chip} << 32 | uint64_t{layer} << 8 |
           static_cast<uint64_t>(kind);
  }
  uint32_t shard_of(uint32_t chip, uint32_t layer, tensor_kind kind) const {
    auto it = shard_index_.find(key(chip, layer, kind));
    assert(it != shard_index_.end());
    return it->second;
  }
  uint32_t op_end(uint32_t id) const {
    return p_.ops[id].start_slot + p_.ops[id].duration_slots;
  }
  uint32_t tr_end(uint32_t id) const {
    return p_.transfers[id].start_slot + p_.transfers[id].duration_slots;
  }
  const buffer_shape& shape_of(const avail& x) const {
    return x.tr != no_id ? tr_shape_[x.tr]
                         : p_.ops[x.op].outputs[x.output].shape;
  }

  // Shapes: x (all of d_model, with the row table), a slice of it, and the
  // partial sums of a slice.
  buffer_shape x_shape(uint32_t rows) const {
    return {rows, 0, s_.d_model, 1, true};
  }
  std::pair<uint32_t, uint32_t> slice(uint32_t j, uint32_t s) const {
    return {static_cast<uint32_t>(uint64_t{s_.d_model} * j / s),
            static_cast<uint32_t>(uint64_t{s_.d_model} * (j + 1) / s)};
  }
  buffer_shape slice_shape(uint32_t rows, uint32_t j, uint32_t s,
                           uint32_t pieces, bool table) const {
    auto [e0, e1] = slice(j, s);
    return {rows, e0, e1 - e0, pieces, table};
  }

  // Adds an op reading `inputs` (in order) and writing `outputs`; it starts
  // when its node is free and every input is there.
  uint32_t add_op(op_kind kind, uint32_t chip, uint32_t layer, uint32_t mb,
                  op_cost cost, const std::vector<avail>& inputs,
                  std::vector<buffer_shape> outputs) {
    op o;
    o.id = static_cast<uint32_t>(p_.ops.size());
    o.kind = kind;
    o.chip = chip;
    o.layer = layer;
    o.micro_batch = mb;
    o.duration_ns = op_duration_ns(cfg_.chip, s_.weight_dtype, cost);
    o.duration_slots = to_slots(o.duration_ns, slot_ns_);
    uint32_t ready = chip_free_[chip];
    o.inputs.reserve(inputs.size()); // exact: a plan holds ~10^5 ops
    o.outputs.reserve(outputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& x = inputs[i];
      assert(x.chip == chip);
      operand in;
      in.shape = shape_of(x);
      if (x.tr != no_id) {
        auto& t = p_.transfers[x.tr];
        assert(t.consumer_op == no_id); // one reader per transfer
        t.consumer_op = o.id;
        t.consumer_input = static_cast<uint32_t>(i);
        in.transfer = x.tr;
        ready = std::max(ready, tr_end(x.tr));
        if (std::find(o.after_transfers.begin(), o.after_transfers.end(),
                      x.tr) == o.after_transfers.end())
          o.after_transfers.push_back(x.tr);
      } else {
        in.producer = x.op;
        in.producer_output = x.output;
        ready = std::max(ready, op_end(x.op));
        if (std::find(o.after_ops.begin(), o.after_ops.end(), x.op) ==
            o.after_ops.end())
          o.after_ops.push_back(x.op);
      }
      o.inputs.push_back(in);
    }
    for (auto& shape : outputs)
      o.outputs.push_back({0, shape});
    // On a shared machine the op also needs one of its cores.
    ready = cores_.book(ready, o.duration_slots);
    o.start_slot = ready;
    chip_free_[chip] = ready + o.duration_slots;
    note_end(chip_free_[chip]);
    p_.ops.push_back(std::move(o));
    return p_.ops.back().id;
  }

  // On a shared machine a transfer's own CPU (the link profile's cpu_ns:
  // progress threads posting it, then reaping it and waking the receiver)
  // takes a core too, half at each end; it delays no op directly, it only
  // leaves the cores less time.
  void book_transfer_cpu(uint32_t link, uint32_t start, uint32_t end) {
    if (cfg_.machine_cores == 0)
      return;
    uint32_t half = transfer_cpu_slots_per_end(topo_.profile(link), slot_ns_);
    cores_.book(start, half); // no-ops when the profile has no cpu_ns
    cores_.book(end, half);
  }

  // Sends `x` (an op's output on its node) to `dst` along the
  // earliest-arriving short route; intermediate chips store and forward.
  caf::expected<avail> send(const avail& x, uint32_t dst, uint32_t layer,
                            uint32_t mb) {
    assert(x.tr == no_id);
    const buffer_shape shape = shape_of(x);
    uint64_t payload = shape.bytes();
    uint64_t bytes = transport::framed_bytes(payload);
    uint32_t fwd_slots = to_slots(
        op_duration_ns(cfg_.chip, s_.weight_dtype, forward_cost(bytes)),
        slot_ns_);
    auto route = routes_.earliest(x.chip, dst, bytes, op_end(x.op), fwd_slots,
                                  slot_ns_, chip_free_, link_free_);
    if (!route)
      return caf::make_error(errc::infeasible,
                             "no route from " +
                                 transport::to_string(cfg_.ref(x.chip)) +
                                 " to " + transport::to_string(cfg_.ref(dst)));
    avail from = x;
    uint32_t prev_tr = no_id;
    for (size_t h = 0; h < route->size(); ++h) {
      uint32_t d = (*route)[h];
      uint32_t a = topo_.link_src(d), b = topo_.link_dst(d);
      if (h > 0)
        from = {a,
                add_op(op_kind::forward, a, layer, mb, forward_cost(bytes),
                       {avail{a, no_id, 0, prev_tr}}, {shape}),
                0, no_id};
      transfer t;
      t.id = static_cast<uint32_t>(p_.transfers.size());
      t.link = d;
      t.src = a;
      t.dst = b;
      t.payload_bytes = payload;
      t.bytes = bytes;
      t.duration_slots =
          to_slots(transfer_duration_ns(topo_.profile(d), bytes), slot_ns_);
      t.start_slot = std::max(op_end(from.op), link_free_[d]);
      link_free_[d] = t.start_slot + t.duration_slots;
      note_end(link_free_[d]);
      book_transfer_cpu(d, t.start_slot, t.start_slot + t.duration_slots);
      t.after_op = from.op;
      t.src_output = from.output;
      t.after_transfer = prev_tr;
      p_.transfers.push_back(std::move(t));
      tr_shape_.push_back(shape);
      prev_tr = p_.transfers.back().id;
    }
    return avail{dst, no_id, 0, prev_tr};
  }

  // An op output holding x on its node (a received buffer is copied once:
  // a transfer has one reader, and it cannot be sent on from the receive
  // arena).
  avail materialise(const avail& x, uint32_t layer, uint32_t mb) {
    if (x.tr == no_id)
      return x;
    const auto& shape = tr_shape_[x.tr];
    uint32_t o =
        add_op(op_kind::forward, x.chip, layer, mb,
               forward_cost(transport::framed_bytes(shape.bytes())), {x},
               {shape});
    return {x.chip, o, 0, no_id};
  }

  // x available at `to`: itself if already there, else sent.
  caf::expected<avail> move_to(const avail& x, uint32_t to, uint32_t layer,
                               uint32_t mb) {
    if (x.chip == to)
      return x;
    return send(materialise(x, layer, mb), to, layer, mb);
  }

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

  // A reduction input: blocks [b0, b1) whose canonical pieces for every
  // element of slice j are output `output` of `op` on `chip`.
  struct input {
    uint32_t chip = 0, op = no_id, b0 = 0, b1 = 0;
    std::vector<uint32_t> outputs; // by slice j
  };
  caf::expected<avail> combine_slice(uint32_t t, uint32_t j, uint32_t s,
                                     const std::vector<input>& inputs,
                                     const avail* residual, uint32_t rows,
                                     uint32_t nb, uint32_t layer, uint32_t mb);
  // `read`: which chips' root slices are read after it (null: all). Roots
  // nobody reads would be dead ops, running after the step's last sample:
  // the last layer's, of which the head reads the first sub-group's, and
  // a group's last, of which the next group takes each slice from its
  // nearest holder (handoff_sources).
  caf::expected<std::vector<avail>>
  reduce_scatter(const group_view& v, const std::vector<input>& parts,
                 const std::vector<avail>& residual, uint32_t nb, uint32_t rows,
                 uint32_t layer, uint32_t mb, const std::vector<bool>* read);
  // x on one chip of a group: the buffers its ops read it from (all of it,
  // or its slices in order, where they arrived) and the one holding the
  // chip's own slice (the residual its root combine adds).
  struct x_on_chip {
    std::vector<avail> reads;
    avail own;
  };
  // Who reads an all-gather's x: the next half-layer's ops (chips without
  // heads or MLP rows get none), or the head's gather on the first chip.
  enum class x_reader { attention, mlp, head };
  caf::expected<std::vector<x_on_chip>>
  all_gather(const group_view& v, const std::vector<avail>& slices, uint32_t mb,
             x_reader reader);
  caf::error group_step(size_t g, const group_view& v, const avail& x0,
                        std::vector<avail>& slices, uint32_t mb);
  // `read_after`: which chips' output slices are read after the layer
  // (null: all; see reduce_scatter).
  caf::expected<std::vector<avail>>
  layer_step(uint32_t l, const group_view& v, std::vector<x_on_chip> xs,
             uint32_t rows, uint32_t mb, const std::vector<bool>* read_after);
  // Where chip i of group `to` takes its slice j at a hand-off from group
  // `from`: the nearest chip holding it (every sub-group's chip j of
  // `from` computed the same root), or a chip of an earlier sub-group of
  // `to`, once that has it, if nearer. By hops, so the previous group's
  // last layer knows which roots will be read.
  struct handoff_source {
    bool from_previous = true;
    uint32_t index = 0; // chip index in its group
  };
  std::vector<handoff_source> handoff_sources(const group_view& from,
                                              const group_view& to);
  // handoff_sources() into group g >= 1, computed once a build (each
  // micro-batch's hand-off and the previous group's last layer read it).
  const std::vector<handoff_source>& handoff_into(size_t g);
  caf::expected<avail> embedding(uint32_t mb, uint32_t feed);
  caf::expected<uint32_t> head(uint32_t mb, const avail& x);

  const schedule_inputs& in_;
  step_program& p_;
  const model::model_spec& s_;
  topology& topo_;
  const cluster_config& cfg_;
  uint64_t slot_ns_;
  std::vector<uint32_t> chip_free_; // by node
  std::vector<uint32_t> link_free_;
  std::vector<std::vector<handoff_source>> handoffs_; // by group
  core_timeline cores_;
  std::vector<buffer_shape> tr_shape_; // by transfer: what it carries
  std::unordered_map<uint64_t, uint32_t> shard_index_;
  std::unordered_map<uint64_t, uint32_t> kv_index_;
  bool stopped_ = false;
  route_search routes_{topo_};
};

caf::expected<avail>
builder::combine_slice(uint32_t t, uint32_t j, uint32_t s,
                       const std::vector<input>& inputs, const avail* residual,
                       uint32_t rows, uint32_t nb, uint32_t layer,
                       uint32_t mb) {
  std::vector<avail> reads;
  std::vector<reduction_part> parts;
  std::vector<model::tree_node> nodes;
  for (const auto& in : inputs) {
    auto pieces = model::canonical_pieces(nb, in.b0, in.b1);
    avail part{in.chip, in.op, in.outputs[j], no_id};
    if (in.chip != t) {
      auto moved = send(part, t, layer, mb);
      if (!moved)
        return moved.error();
      part = *moved;
    }
    reads.push_back(part);
    parts.push_back({in.chip, in.b0, in.b1});
    nodes.insert(nodes.end(), pieces.begin(), pieces.end());
  }
  bool root = residual != nullptr;
  if (root)
    reads.push_back(*residual);
  uint32_t b0 = inputs.front().b0, b1 = inputs.back().b1;
  auto outs = root ? 1u
                   : static_cast<uint32_t>(
                         model::canonical_pieces(nb, b0, b1).size());
  auto shape = slice_shape(rows, j, s, outs, root);
  double in_bytes = double(shape.rows) * shape.cols * 4 * nodes.size();
  double out_bytes = double(shape.bytes());
  uint32_t c = add_op(op_kind::combine, t, layer, mb,
                      {in_bytes + (root ? 2.0 : 1.0) * out_bytes, in_bytes / 4},
                      reads, {shape});
  auto& o = p_.ops[c];
  o.n_blocks = nb;
  o.parts = std::move(parts);
  o.nodes = std::move(nodes);
  std::tie(o.out_first, o.out_end) = slice(j, s);
  return avail{t, c, 0, no_id};
}

caf::expected<std::vector<avail>>
builder::reduce_scatter(const group_view& v, const std::vector<input>& parts,
                        const std::vector<avail>& residual, uint32_t nb,
                        uint32_t rows, uint32_t layer, uint32_t mb,
                        const std::vector<bool>* read) {
  auto wanted = [&](uint32_t i) { return read == nullptr || (*read)[i]; };
  // parts[i] is chip i's part (op == no_id: none).
  auto sub_parts = [&](uint32_t q) {
    std::vector<input> out;
    for (uint32_t j = 0; j < v.s && q * v.s + j < v.k; ++j)
      if (parts[q * v.s + j].op != no_id)
        out.push_back(parts[q * v.s + j]);
    return out;
  };
  std::vector<avail> slices(v.k);
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
      if (!wanted(i))
        continue;
      auto c = combine_slice((*v.chips)[i], i % v.s, v.s, all, &residual[i],
                             rows, nb, layer, mb);
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
      auto c = combine_slice(t, j, v.s, in, nullptr, rows, nb, layer, mb);
      if (!c)
        return c.error();
      // The partial combine's one output is slice j's pieces.
      std::vector<uint32_t> outputs(v.s, 0);
      level1[q].push_back(
          {t, c->op, in.front().b0, in.back().b1, std::move(outputs)});
    }
  }
  for (uint32_t q = 0; q < v.subs; ++q)
    for (uint32_t j = 0; j < v.s; ++j) {
      uint32_t i = q * v.s + j;
      if (!wanted(i))
        continue;
      std::vector<input> in;
      for (uint32_t r = 0; r < v.subs; ++r)
        if (!level1[r].empty())
          in.push_back(level1[r][j]);
      auto c = combine_slice(v.at(q, j), j, v.s, in, &residual[i], rows, nb,
                             layer, mb);
      if (!c)
        return c.error();
      slices[i] = *c;
    }
  return slices;
}

// Chip j of each sub-group sends its slice to the sub-group's other chips;
// each chip's ops then read x as the slices, where they arrived.
caf::expected<std::vector<builder::x_on_chip>>
builder::all_gather(const group_view& v, const std::vector<avail>& slices,
                    uint32_t mb, x_reader reader) {
  std::vector<x_on_chip> xs(v.k);
  bool aligned = in_.place->aligned_splits;
  for (uint32_t q = 0; q < v.subs; ++q)
    for (uint32_t j = 0; j < v.s; ++j) {
      uint32_t i = q * v.s + j;
      if (reader == x_reader::head && i > 0)
        return xs;
      uint32_t t = v.at(q, j);
      auto& x = xs[i];
      x.own = slices[i];
      if (reader != x_reader::head) {
        auto [b0, b1] =
            part_blocks(s_, v.k, i, aligned, reader == x_reader::attention);
        if (b1 <= b0)
          continue; // nothing reads x here: its own slice is the residual
      }
      for (uint32_t o = 0; o < v.s; ++o) {
        const auto& sl = slices[q * v.s + o];
        if (o == j) {
          x.reads.push_back(sl);
          continue;
        }
        auto moved = send(sl, t, model::global_layer, mb);
        if (!moved)
          return moved.error();
        x.reads.push_back(*moved);
      }
    }
  return xs;
}

caf::expected<std::vector<avail>>
builder::layer_step(uint32_t l, const group_view& v, std::vector<x_on_chip> xs,
                    uint32_t rows, uint32_t mb,
                    const std::vector<bool>* read_after) {
  uint32_t k = v.k;
  uint32_t hd = s_.head_dim;
  double elem = model::element_bytes(s_.weight_dtype);
  uint64_t act = x_shape(rows).bytes();
  double ctx = in_.context;
  uint32_t seqs = rows / in_.tokens;
  bool aligned = in_.place->aligned_splits;
  std::vector<avail> slices;
  for (int half = 0; half < 2; ++half) {
    bool attn = half == 0;
    uint32_t nb = model::blocks_of(attn ? s_.q_dim() : s_.d_ff);
    std::vector<input> parts(k);
    for (uint32_t i = 0; i < k; ++i) {
      auto [b0, b1] = part_blocks(s_, k, i, aligned, attn);
      if (b1 <= b0)
        continue; // no heads / no MLP rows on this chip
      uint32_t chip = (*v.chips)[i];
      op_cost cost;
      std::vector<uint32_t> weights;
      uint64_t scratch_floats = 0;
      if (attn) {
        auto [h0, h1] = head_range(s_, k, i, aligned);
        auto [kv0, kv1] = model::kv_heads_of(s_, h0, h1);
        double kvh = kv1 - kv0;
        double params = double(s_.d_model) * hd * (2.0 * (h1 - h0) + 2.0 * kvh);
        cost.bytes = params * elem + kvh * hd * 2 * 4 * ctx * seqs + 2.0 * act;
        cost.flops = 2.0 * params * rows + 4.0 * rows * ctx * (h1 - h0) * hd;
        for (auto kind : {tensor_kind::attn_norm, tensor_kind::wq,
                          tensor_kind::wk, tensor_kind::wv, tensor_kind::wo})
          weights.push_back(shard_of(chip, l, kind));
        scratch_floats = model::attention_scratch_floats(
            s_, h1 - h0, kv1 - kv0, rows, in_.context);
      } else {
        double params =
            3.0 * double(s_.d_model) * (b1 - b0) * model::reduction_block_elems;
        cost.bytes = params * elem + 2.0 * act;
        cost.flops = 2.0 * params * rows;
        for (auto kind : {tensor_kind::mlp_norm, tensor_kind::w_gate,
                          tensor_kind::w_up, tensor_kind::w_down})
          weights.push_back(shard_of(chip, l, kind));
        scratch_floats = model::mlp_scratch_floats(
            s_, std::min(b1 * model::reduction_block_elems, s_.d_ff) -
                    b0 * model::reduction_block_elems,
            rows);
      }
      std::vector<buffer_shape> outs;
      input part{chip, no_id, b0, b1, {}};
      if (k == 1) {
        // The whole reduction on one chip: the op adds the residual itself
        // (a root combine of its one piece), out comes the next x.
        outs.push_back(x_shape(rows));
        scratch_floats += uint64_t{rows} * s_.d_model;
      } else {
        auto pieces = static_cast<uint32_t>(
            model::canonical_pieces(nb, b0, b1).size());
        for (uint32_t j = 0; j < v.s; ++j) {
          outs.push_back(slice_shape(rows, j, v.s, pieces, false));
          part.outputs.push_back(j);
        }
      }
      if (xs[i].reads.size() > 1)
        cost.bytes += 2.0 * act; // x assembled from its slices
      part.op = add_op(attn ? op_kind::attention : op_kind::mlp, chip, l, mb,
                       cost, xs[i].reads, std::move(outs));
      auto& o = p_.ops[part.op];
      o.weights = std::move(weights);
      o.scratch_bytes = (scratch_floats + assembled_x_floats(o)) * 4;
      if (attn)
        o.kv = kv_index_.at(key(chip, l, tensor_kind::wk));
      parts[i] = std::move(part);
    }
    if (k == 1) {
      avail x{(*v.chips)[0], parts[0].op, 0, no_id};
      xs = {{{x}, x}};
      slices = {x};
      continue;
    }
    std::vector<avail> residual(k);
    for (uint32_t i = 0; i < k; ++i)
      residual[i] = xs[i].own;
    auto sl = reduce_scatter(v, parts, residual, nb, rows, l, mb,
                             attn ? nullptr : read_after);
    if (!sl)
      return sl.error();
    slices = std::move(*sl);
    if (attn) {
      auto f = all_gather(v, slices, mb, x_reader::mlp);
      if (!f)
        return f.error();
      xs = std::move(*f);
    }
  }
  return slices;
}

// Each embedding chip holds a row slice of the table and sends a full
// buffer with the rows of the tokens it holds; the first root picks, per
// token, the buffer of the owning chip (a selection, no arithmetic: the
// bits are the table's). The feed's row table reaches every embedding chip
// and the first root.
caf::expected<avail> builder::embedding(uint32_t mb, uint32_t feed) {
  const auto& pl = *in_.place;
  uint32_t rows = p_.rows(mb);
  uint64_t act = x_shape(rows).bytes();
  uint32_t root0 = pl.groups[0][0];
  avail fed{in_.sampler, feed, 0, no_id};
  std::vector<avail> reads;
  auto at_root = move_to(fed, root0, model::global_layer, mb);
  if (!at_root)
    return at_root.error();
  reads.push_back(*at_root);
  std::vector<uint32_t> bounds{0};
  for (uint32_t e : pl.embed_chips) {
    uint32_t sh = shard_of(e, model::global_layer, tensor_kind::tok_embedding);
    bounds.push_back(in_.placed->shards[sh].range.row_end);
    auto in = move_to(fed, e, model::global_layer, mb);
    if (!in)
      return in.error();
    uint32_t o = add_op(op_kind::embed, e, model::global_layer, mb,
                        {2.0 * act, 0}, {*in},
                        {{rows, 0, s_.d_model, 1, false}});
    p_.ops[o].weights = {sh};
    auto part = move_to({e, o, 0, no_id}, root0, model::global_layer, mb);
    if (!part)
      return part.error();
    reads.push_back(*part);
  }
  uint32_t x0 = add_op(op_kind::select, root0, model::global_layer, mb,
                       {2.0 * act, 0}, reads, {x_shape(rows)});
  p_.ops[x0].vocab_bounds = std::move(bounds);
  return avail{root0, x0, 0, no_id};
}

// Final norm of each sequence's emitting row on the chip holding x, the
// LM-head row slices, and the logits to the sampler, which writes the next
// step's row table. Returns the sample op.
caf::expected<uint32_t> builder::head(uint32_t mb, const avail& x) {
  const auto& pl = *in_.place;
  uint32_t seqs = p_.sequences(mb);
  uint64_t act = x_shape(seqs).bytes();
  uint32_t fn = add_op(op_kind::final_norm, x.chip, model::global_layer, mb,
                       {3.0 * act, 2.0 * act / 4}, {x}, {x_shape(seqs)});
  p_.ops[fn].weights = {
      shard_of(x.chip, model::global_layer, tensor_kind::final_norm)};
  avail xf{x.chip, fn, 0, no_id};
  std::vector<avail> logits;
  for (uint32_t h : pl.head_chips) {
    uint32_t sh = shard_of(h, model::global_layer, tensor_kind::lm_head);
    const auto& r = in_.placed->shards[sh].range;
    auto in = move_to(xf, h, model::global_layer, mb);
    if (!in)
      return in.error();
    double params = double(r.rows()) * s_.d_model;
    uint32_t o = add_op(
        op_kind::lm_head, h, model::global_layer, mb,
        {params * model::element_bytes(s_.weight_dtype), 2.0 * params * seqs},
        {*in}, {{seqs, r.row_begin, r.rows(), 1, true}});
    p_.ops[o].weights = {sh};
    auto out = move_to({h, o, 0, no_id}, in_.sampler, model::global_layer, mb);
    if (!out)
      return out.error();
    logits.push_back(*out);
  }
  return add_op(op_kind::sample, in_.sampler, model::global_layer, mb,
                {2.0 * s_.vocab * seqs * 4, 0}, logits,
                {{seqs, 0, 0, 1, true}});
}

std::vector<builder::handoff_source>
builder::handoff_sources(const group_view& from, const group_view& to) {
  std::vector<handoff_source> out(to.k);
  for (uint32_t i = 0; i < to.k; ++i) {
    uint32_t j = i % to.s, dst = (*to.chips)[i];
    // Chip i of the previous group first (ties keep it), then the other
    // holders of slice j there, then this group's earlier ones.
    handoff_source best{true, i < from.k ? i : j};
    uint32_t best_hops = topo_.hops((*from.chips)[best.index], dst);
    for (uint32_t q = 0; q * from.s + j < from.k; ++q)
      if (uint32_t h = topo_.hops(from.at(q, j), dst); h < best_hops) {
        best = {true, q * from.s + j};
        best_hops = h;
      }
    for (uint32_t q = 0; q * to.s + j < i; ++q)
      if (uint32_t h = topo_.hops(to.at(q, j), dst); h < best_hops) {
        best = {false, q * to.s + j};
        best_hops = h;
      }
    out[i] = best;
  }
  return out;
}

const std::vector<builder::handoff_source>& builder::handoff_into(size_t g) {
  const auto& groups = in_.place->groups;
  handoffs_.resize(groups.size());
  if (handoffs_[g].empty())
    handoffs_[g] = handoff_sources(view_of(groups[g - 1]), view_of(groups[g]));
  return handoffs_[g];
}

// Micro-batch `mb` through layer group `g`: x arrives (from the first
// root `x0` for group 0, else as `slices` of the previous group), the
// group's layers run, and `slices` become this group's output slices.
caf::error builder::group_step(size_t g, const group_view& v, const avail& x0,
                               std::vector<avail>& slices, uint32_t mb) {
  const auto& pl = *in_.place;
  uint32_t rows = p_.rows(mb);
  std::vector<x_on_chip> xs(v.k);
  auto gathered = [&](const std::vector<avail>& sl) -> caf::error {
    if (v.k == 1) {
      xs = {{{sl[0]}, sl[0]}};
      return {};
    }
    auto f = all_gather(v, sl, mb, x_reader::attention);
    if (!f)
      return f.error();
    xs = std::move(*f);
    return {};
  };
  if (g == 0) {
    for (uint32_t i = 0; i < v.k; ++i) {
      auto moved = move_to(x0, v.at(0, i), model::global_layer, mb);
      if (!moved)
        return moved.error();
      // x is read twice (the op and the residual): hold it locally.
      avail x = v.k > 1 ? materialise(*moved, model::global_layer, mb) : *moved;
      xs[i] = {{x}, x};
    }
  } else {
    // Chip j of every sub-group of the previous group holds slice j (each
    // computed the same root): chip (q, j) here takes it from the nearest
    // of those, or from a chip of an earlier sub-group here once that has
    // it, if nearer. (Taking it from chip (q, j) of the previous group
    // crossed two hops twice over on groups of two nodes whose nodes are
    // not all linked, falcon-180b on groq-1512: the far node's slices
    // went around the near one.)
    std::vector<avail> in(v.k);
    const auto& sources = handoff_into(g);
    for (uint32_t i = 0; i < v.k; ++i) {
      const auto& src = sources[i];
      const avail& from = src.from_previous ? slices[src.index] : in[src.index];
      auto moved = send(from, (*v.chips)[i], model::global_layer, mb);
      if (!moved)
        return moved.error();
      // Held locally for the all-gather (a received buffer is not sent on).
      in[i] = v.k > 1 ? materialise(*moved, model::global_layer, mb) : *moved;
    }
    if (auto err = gathered(in))
      return err;
  }
  auto first = static_cast<uint32_t>(g * pl.layers_per_group);
  auto last = std::min<uint32_t>(
      s_.n_layers, static_cast<uint32_t>((g + 1) * pl.layers_per_group));
  for (uint32_t l = first; l < last; ++l) {
    if (l > first)
      if (auto err = gathered(slices))
        return err;
    // The last layer's roots that are read: the head's (the first
    // sub-group's), or those the next group takes.
    std::vector<bool> read;
    if (l + 1 == last) {
      read.assign(v.k, false);
      if (g + 1 == pl.groups.size())
        std::fill_n(read.begin(), std::min(v.s, v.k), true);
      else
        for (const auto& src : handoff_into(g + 1))
          if (src.from_previous)
            read[src.index] = true;
    }
    auto next = layer_step(l, v, std::move(xs), rows, mb,
                           read.empty() ? nullptr : &read);
    if (!next)
      return next.error();
    slices = std::move(*next);
  }
  return {};
}

caf::error builder::run() {
  const auto& pl = *in_.place;
  uint32_t mbs = in_.micro_batches;
  p_.kind = in_.kind;
  p_.tokens = in_.tokens;
  p_.micro_batches = mbs;
  p_.micro_batch_sequences.clear();
  for (uint32_t mb = 0; mb <= mbs; ++mb)
    p_.micro_batch_sequences.push_back(in_.batch * mb / mbs);
  // Every micro-batch's feed first: the sampler node runs ops in the order
  // they are added, and feed m+1 must not wait for sample m.
  std::vector<uint32_t> feeds(mbs, no_id);
  for (uint32_t mb = 0; mb < mbs; ++mb)
    if (p_.sequences(mb) > 0)
      feeds[mb] = add_op(op_kind::feed, in_.sampler, model::global_layer, mb,
                         {double(p_.rows(mb)) * 16, 0}, {},
                         {{p_.rows(mb), 0, 0, 1, true}});
  // Then stage by stage: every micro-batch's embedding, the layer groups,
  // every micro-batch's head. Micro-batch m+1 takes group g's chips right
  // after micro-batch m leaves them, while m moves on to group g+1: the
  // micro-batches pipeline through the groups within the step. (Booked micro-batch by micro-batch, m+1
  // waited for every relay and forward of m's token loop, including the
  // logits that cross the first groups' chips on their way to host 0.)
  std::vector<uint32_t> active;
  for (uint32_t mb = 0; mb < mbs; ++mb)
    if (feeds[mb] != no_id)
      active.push_back(mb);
  std::vector<avail> x0(mbs);
  for (uint32_t mb : active) {
    auto x = embedding(mb, feeds[mb]);
    if (!x)
      return x.error();
    x0[mb] = *x;
  }
  // x enters each group on every chip: the first root sends it to the
  // first group; later, chip i of a group hands its slice of the previous
  // group's output to chip i of the next, which all-gathers.
  // Booked by wavefront (micro-batch i in group t - i): what runs at about
  // the same time is booked together, since chips and links are booked at
  // the end of what they already hold (no backfilling).
  std::vector<std::vector<avail>> slices(mbs); // per chip of the last group
  auto groups = pl.groups.size();
  for (size_t t = 0; t + 1 < groups + active.size(); ++t)
    for (size_t i = 0; i < active.size() && i <= t; ++i) {
      size_t g = t - i;
      if (g >= groups)
        continue;
      uint32_t mb = active[i];
      if (auto err = group_step(g, view_of(pl.groups[g]), x0[mb], slices[mb],
                                mb))
        return err;
      if (stopped_)
        return {};
    }
  for (uint32_t mb : active) {
    uint32_t rows = p_.rows(mb);
    // The final norm reads x whole. In decode on real chips x's rows are
    // the sequences' (one token each), so x crosses to the LM head as its
    // slices, each on its own route, and is gathered and normed on the
    // first head chip (detail::decode_norm_chip); in prefill its chunk of
    // rows is larger than the normed rows, so it is gathered and normed on
    // the last group's first chip, which sends on the normed rows alone.
    // (On a shared machine a transfer costs CPU, and the head follows the
    // groups: x stays whole.)
    auto v = view_of(pl.groups.back());
    uint32_t norm_chip =
        in_.tokens == 1 ? decode_norm_chip(pl, cfg_) : v.at(0, 0);
    avail last_x;
    auto gather_at = [&](uint32_t t, const std::vector<avail>& reads) -> avail {
      return {t,
              add_op(op_kind::gather, t, model::global_layer, mb,
                     {2.0 * double(x_shape(rows).bytes()), 0}, reads,
                     {x_shape(rows)}),
              0, no_id};
    };
    if (v.k == 1) {
      auto x = move_to(slices[mb][0], norm_chip, model::global_layer, mb);
      if (!x)
        return x.error();
      last_x = *x;
    } else if (norm_chip != v.at(0, 0)) {
      // The last layer's roots are the first sub-group's only.
      std::vector<avail> reads;
      for (uint32_t j = 0; j < v.s; ++j) {
        auto moved = send(slices[mb][j], norm_chip, model::global_layer, mb);
        if (!moved)
          return moved.error();
        reads.push_back(*moved);
      }
      last_x = gather_at(norm_chip, reads);
    } else {
      auto f = all_gather(v, slices[mb], mb, x_reader::head);
      if (!f)
        return f.error();
      last_x = gather_at(v.at(0, 0), (*f)[0].reads);
    }
    auto sample = head(mb, last_x);
    if (!sample)
      return sample.error();
    // Decode closes the token loop: the sample writes the row table the
    // next step's feed sends. A prefill chunk's first token is handed to
    // decode by the host when the prompt ends.
    if (in_.kind == program_kind::decode) {
      operand carried;
      carried.shape = p_.ops[*sample].outputs[0].shape;
      carried.producer = *sample;
      carried.carried = true;
      p_.ops[feeds[mb]].inputs.push_back(carried);
    }
  }
  uint32_t end = 0;
  for (const auto& o : p_.ops)
    end = std::max(end, o.start_slot + o.duration_slots);
  for (const auto& t : p_.transfers)
    end = std::max(end, t.start_slot + t.duration_slots);
  p_.slots_per_step = end;
  p_.period_slots = end;
  return {};
}

} // namespace

caf::expected<bool> build_schedule(const schedule_inputs& in,
                                   step_program& out) {
  out = step_program{};
  builder b{in, out};
  if (auto err = b.run())
    return err;
  // Plans are held for a while (candidates compared, a re-plan beside its
  // base): no growth slack.
  out.ops.shrink_to_fit();
  out.transfers.shrink_to_fit();
  return !b.stopped();
}

} // namespace lockstep::planner::detail
