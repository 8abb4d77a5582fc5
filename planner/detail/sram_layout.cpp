#include "planner/detail/sram_layout.hpp"

#include "model/shard_ops.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <limits>
#include <map>

namespace lockstep::planner::detail {

namespace {

using model::tensor_kind;

uint64_t align_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

// Per-chip bump allocator for the static region.
struct static_alloc {
  std::vector<uint64_t> top;
  uint64_t take(uint32_t chip, uint64_t bytes) {
    uint64_t at = align_up(top[chip], sram_align);
    top[chip] = at + bytes;
    return at;
  }
};

} // namespace

void place_static(const model::model_spec& s, const placement& pl,
                  uint32_t batch, uint32_t context,
                  const cluster_config& config, plan& out) {
  uint32_t node_count = config.node_count();
  out.shards.clear();
  out.kv_slices.clear();
  out.usage.assign(node_count, {});
  static_alloc a{std::vector<uint64_t>(node_count, 0)};
  auto add = [&](uint32_t chip, model::tensor_id id, model::shard_range r) {
    auto type = model::dtype_of(s, id.kind);
    shard sh{chip, id, r, 0, 0, 0};
    uint64_t data = model::shard_data_bytes(type, r);
    uint64_t scales = model::shard_scale_bytes(type, r);
    sh.bytes = data + scales;
    sh.offset = a.take(chip, data);
    sh.scales_offset = scales > 0 ? a.take(chip, scales) : 0;
    out.shards.push_back(sh);
    out.usage[chip].weight_bytes += sh.bytes;
  };
  uint32_t k = pl.tp_degree;
  uint32_t hd = s.head_dim;
  constexpr uint32_t B = model::reduction_block_elems;
  // The embedding and the LM head: vocabulary rows split across chips.
  auto vocab_rows = [&](const std::vector<uint32_t>& chips, tensor_kind kind) {
    auto n = static_cast<uint32_t>(chips.size());
    for (uint32_t i = 0; i < n; ++i)
      add(chips[i], {model::global_layer, kind},
          {static_cast<uint32_t>(uint64_t{s.vocab} * i / n),
           static_cast<uint32_t>(uint64_t{s.vocab} * (i + 1) / n), 0,
           s.d_model});
  };
  vocab_rows(pl.embed_chips, tensor_kind::tok_embedding);
  struct kv_need {
    uint32_t chip, layer, kv0, kv1;
  };
  std::vector<kv_need> kv;
  for (size_t g = 0; g < pl.groups.size(); ++g)
    for (uint32_t l = static_cast<uint32_t>(g * pl.layers_per_group);
         l < std::min<uint32_t>(
                 s.n_layers,
                 static_cast<uint32_t>((g + 1) * pl.layers_per_group));
         ++l)
      for (uint32_t i = 0; i < k; ++i) {
        uint32_t c = pl.groups[g][i];
        auto [h0, h1] = head_range(s, k, i, pl.aligned_splits);
        auto [f0, f1] = block_range(s.d_ff, k, i, pl.aligned_splits);
        if (h1 > h0) {
          auto [kv0, kv1] = model::kv_heads_of(s, h0, h1);
          add(c, {l, tensor_kind::attn_norm}, {0, 1, 0, s.d_model});
          add(c, {l, tensor_kind::wq}, {h0 * hd, h1 * hd, 0, s.d_model});
          add(c, {l, tensor_kind::wk}, {kv0 * hd, kv1 * hd, 0, s.d_model});
          add(c, {l, tensor_kind::wv}, {kv0 * hd, kv1 * hd, 0, s.d_model});
          add(c, {l, tensor_kind::wo}, {0, s.d_model, h0 * hd, h1 * hd});
          kv.push_back({c, l, kv0, kv1});
        }
        if (f1 > f0) {
          uint32_t r0 = f0 * B, r1 = std::min(f1 * B, s.d_ff);
          add(c, {l, tensor_kind::mlp_norm}, {0, 1, 0, s.d_model});
          add(c, {l, tensor_kind::w_gate}, {r0, r1, 0, s.d_model});
          add(c, {l, tensor_kind::w_up}, {r0, r1, 0, s.d_model});
          add(c, {l, tensor_kind::w_down}, {0, s.d_model, r0, r1});
        }
      }
  // The final norm: prefill's on the last group's first chip, decode's
  // where decode_norm_chip says.
  add(pl.groups.back()[0], {model::global_layer, tensor_kind::final_norm},
      {0, 1, 0, s.d_model});
  if (uint32_t h = decode_norm_chip(pl, config); h != pl.groups.back()[0])
    add(h, {model::global_layer, tensor_kind::final_norm},
        {0, 1, 0, s.d_model});
  vocab_rows(pl.head_chips, tensor_kind::lm_head);
  // KV slices after all of a chip's shards: every sequence (batch slot) of
  // the chip's kv heads, every position.
  for (const auto& n : kv) {
    kv_slice slice{n.chip, n.layer, n.kv0, n.kv1, batch, context, 0, 0};
    uint64_t each = slice.bytes_each(hd);
    slice.k_offset = a.take(n.chip, each);
    slice.v_offset = a.take(n.chip, each);
    out.kv_slices.push_back(slice);
    out.usage[n.chip].kv_bytes += 2 * each;
  }
}

std::vector<uint64_t> static_ends(const plan& p, uint32_t node_count) {
  std::vector<uint64_t> end(node_count, 0);
  auto hd = p.spec.head_dim;
  for (const auto& sh : p.shards) {
    auto type = model::dtype_of(p.spec, sh.tensor.kind);
    end[sh.chip] = std::max(
        {end[sh.chip], sh.offset + model::shard_data_bytes(type, sh.range),
         sh.scales_offset + model::shard_scale_bytes(type, sh.range)});
  }
  for (const auto& kv : p.kv_slices)
    end[kv.chip] = std::max({end[kv.chip], kv.k_offset + kv.bytes_each(hd),
                             kv.v_offset + kv.bytes_each(hd)});
  for (auto& e : end)
    e = align_up(e, sram_align);
  return end;
}

namespace {

// A local activation buffer: live from its producer's start to its last
// reader's end (half-open, in slots).
struct live_buffer {
  uint32_t op, output;
  uint64_t bytes;
  uint64_t begin, end;
  uint64_t offset = 0;
};

// Lowest offset for `b` that overlaps no placed buffer live at the same
// time. Returns the offset; `placed` lists buffers of the node so far.
uint64_t first_fit(const live_buffer& b, const std::vector<live_buffer>& placed) {
  std::vector<std::pair<uint64_t, uint64_t>> busy; // [offset, end) in use
  for (const auto& p : placed)
    if (p.begin < b.end && b.begin < p.end)
      busy.push_back({p.offset, p.offset + p.bytes});
  std::sort(busy.begin(), busy.end());
  uint64_t at = 0;
  for (const auto& [o, e] : busy) {
    if (at + b.bytes <= o)
      break;
    at = std::max(at, align_up(e, sram_align));
  }
  return at;
}

} // namespace

void layout_program(plan& p, step_program& prog, uint32_t node_count) {
  constexpr uint64_t forever = std::numeric_limits<uint64_t>::max();
  auto base = static_ends(p, node_count);
  std::vector<uint64_t> send_top(node_count, 0), recv_top(node_count, 0);
  // Send windows: one per (op, output) that transfers carry, shared by all
  // of them; receive windows: two per transfer.
  std::map<std::pair<uint32_t, uint32_t>, uint64_t> window;
  for (auto& t : prog.transfers) {
    uint64_t size = align_up(t.bytes, 8);
    auto [it, fresh] = window.try_emplace({t.after_op, t.src_output}, 0);
    if (fresh) {
      it->second = send_top[t.src];
      send_top[t.src] += size;
    }
    t.src_offset = it->second;
    t.dst_offsets = {recv_top[t.dst], recv_top[t.dst] + size};
    recv_top[t.dst] += 2 * size;
  }
  // Local buffers by lifetime.
  std::vector<std::vector<uint64_t>> last_read(prog.ops.size());
  for (const auto& o : prog.ops)
    last_read[o.id].assign(o.outputs.size(), 0);
  std::vector<std::vector<bool>> kept(prog.ops.size());
  for (const auto& o : prog.ops)
    kept[o.id].assign(o.outputs.size(), o.kind == op_kind::sample);
  for (const auto& o : prog.ops)
    for (const auto& in : o.inputs) {
      if (in.producer == no_id)
        continue;
      if (in.carried) {
        kept[in.producer][in.producer_output] = true;
        continue;
      }
      auto& lr = last_read[in.producer][in.producer_output];
      lr = std::max<uint64_t>(lr, o.start_slot + o.duration_slots);
    }
  std::vector<std::vector<live_buffer>> placed(node_count);
  std::vector<uint64_t> act_bytes(node_count, 0), scratch(node_count, 0);
  for (auto& o : prog.ops) {
    scratch[o.chip] = std::max(scratch[o.chip], o.scratch_bytes);
    for (uint32_t k = 0; k < o.outputs.size(); ++k) {
      if (window.contains({o.id, k}))
        continue;
      live_buffer b{o.id, k, o.outputs[k].bytes(), o.start_slot,
                    std::max<uint64_t>(last_read[o.id][k],
                                       o.start_slot + o.duration_slots)};
      if (kept[o.id][k]) {
        b.begin = 0;
        b.end = forever;
      }
      b.offset = first_fit(b, placed[o.chip]);
      act_bytes[o.chip] =
          std::max(act_bytes[o.chip], b.offset + align_up(b.bytes, 64));
      placed[o.chip].push_back(b);
    }
  }
  prog.arenas.assign(node_count, {});
  std::vector<uint64_t> scratch_base(node_count);
  for (uint32_t n = 0; n < node_count; ++n) {
    auto& a = prog.arenas[n];
    scratch_base[n] = align_up(base[n] + act_bytes[n], sram_align);
    a.send_base = align_up(scratch_base[n] + scratch[n], sram_align);
    a.send_bytes = send_top[n];
    a.recv_base = align_up(a.send_base + a.send_bytes, sram_align);
    a.recv_bytes = recv_top[n];
    a.end = a.recv_base + a.recv_bytes;
    bool used = act_bytes[n] > 0 || scratch[n] > 0 || send_top[n] > 0 ||
                recv_top[n] > 0;
    uint64_t bytes = used ? a.end - base[n] : 0;
    (prog.kind == program_kind::decode ? p.usage[n].decode_bytes
                                       : p.usage[n].prefill_bytes) = bytes;
  }
  for (uint32_t n = 0; n < node_count; ++n)
    for (const auto& b : placed[n])
      prog.ops[b.op].outputs[b.output].offset = base[n] + b.offset;
  for (const auto& [key, win] : window) {
    const auto& o = prog.ops[key.first];
    prog.ops[key.first].outputs[key.second].offset =
        prog.arenas[o.chip].send_base + win + transport::frame_overhead_bytes;
  }
  for (auto& o : prog.ops) {
    if (o.scratch_bytes > 0)
      o.scratch_offset = scratch_base[o.chip];
    for (auto& in : o.inputs) {
      if (in.transfer != no_id) {
        const auto& t = prog.transfers[in.transfer];
        in.offset = prog.arenas[t.dst].recv_base + t.dst_offsets[0] +
                    transport::frame_overhead_bytes;
      } else if (in.producer != no_id) {
        in.offset = prog.ops[in.producer].outputs[in.producer_output].offset;
      }
    }
  }
}

} // namespace lockstep::planner::detail
