// The verifier's memory half: everything a node holds or uses, from the
// plan's own offsets — shards, KV slices, op outputs, scratch, send and
// receive windows — inside SRAM, and never two live things in one place.
//
// Rules: memory-bounds, memory-overlap.

#include "planner/detail/verify_context.hpp"

#include "model/shard_ops.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

namespace lockstep::planner::detail {

namespace {

constexpr uint64_t always = std::numeric_limits<uint64_t>::max();

// What an item is; its name is only spelled out for a violation (a plan of
// falcon-180b holds ~10^5 items, and a verified plan names none of them).
enum class item_kind : uint8_t {
  shard,         // index: plan::shards
  shard_scales,  //   its int8 row scales
  kv_k,          // index: plan::kv_slices
  kv_v,
  output,        // index: op, sub: output
  scratch,       // index: op
  recv_window,   // index: transfer, sub: parity
  framing,       // index: transfer
};

// Something at SRAM [begin, end) live in slots [t0, t1) of every step, the
// step repeating every `repeat` slots (a receive window of parity q repeats
// every buffers x period); t1 == always: live throughout.
struct item {
  uint32_t node;
  uint64_t begin, end;
  uint64_t t0, t1;
  uint64_t repeat;
  item_kind kind;
  uint32_t index;
  uint32_t sub = 0;
};

std::string name_of(const verify_context& v, const step_program& prog,
                    const item& it) {
  switch (it.kind) {
    case item_kind::shard:
      return "shard " + model::to_string(v.p.shards[it.index].tensor);
    case item_kind::shard_scales:
      return "shard " + model::to_string(v.p.shards[it.index].tensor) +
             " scales";
    case item_kind::kv_k:
    case item_kind::kv_v:
      return "KV slice of layer " +
             std::to_string(v.p.kv_slices[it.index].layer) +
             (it.kind == item_kind::kv_k ? " (K)" : " (V)");
    case item_kind::output:
      return v.op_name(prog, prog.ops[it.index]) + " output " +
             std::to_string(it.sub);
    case item_kind::scratch:
      return v.op_name(prog, prog.ops[it.index]) + " scratch";
    case item_kind::recv_window:
      return v.tr_name(prog, prog.transfers[it.index]) + " receive window " +
             std::to_string(it.sub);
    case item_kind::framing:
      return v.tr_name(prog, prog.transfers[it.index]) + " framing";
  }
  return "?";
}

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
}

// Whether a's and b's lifetimes meet in some step. Both repeat with a
// multiple of `period`, so occurrences differ by k * g for any integer k,
// g the gcd of their repeats.
bool meet(const item& a, const item& b) {
  if (a.t1 == always || b.t1 == always)
    return true;
  auto g = static_cast<int64_t>(std::gcd(a.repeat, b.repeat));
  if (g == 0)
    return a.t0 < b.t1 && b.t0 < a.t1;
  // Some integer k with b.t0 + k g < a.t1 and a.t0 < b.t1 + k g.
  auto a0 = static_cast<int64_t>(a.t0), a1 = static_cast<int64_t>(a.t1);
  auto b0 = static_cast<int64_t>(b.t0), b1 = static_cast<int64_t>(b.t1);
  int64_t k_min = floor_div(a0 - b1, g) + 1;
  int64_t k_max = -floor_div(b0 - a1, g) - 1; // ceil((a1 - b0) / g) - 1
  return k_min <= k_max;
}

} // namespace

void verify_memory(verify_context& v, const step_program& prog) {
  const auto& p = v.p;
  const auto& c = v.c;
  uint64_t period = prog.period_slots;
  // One flat array, sorted by node and offset below: a few large blocks
  // that go back to the kernel when freed (a host verifies its plan once
  // and keeps running; per-node vectors left its heap fragmented).
  std::vector<item> items;
  size_t expected = 2 * (p.shards.size() + p.kv_slices.size()) +
                    2 * prog.ops.size();
  for (const auto& o : prog.ops)
    expected += o.outputs.size();
  for (const auto& t : prog.transfers)
    expected += 1 + t.dst_offsets.size();
  items.reserve(expected);
  auto add = [&](uint32_t node, uint64_t offset, uint64_t bytes, uint64_t t0,
                 uint64_t t1, uint64_t repeat, item_kind kind, size_t index,
                 size_t sub = 0) {
    if (bytes > 0)
      items.push_back({node, offset, offset + bytes, t0, t1, repeat, kind,
                             static_cast<uint32_t>(index),
                             static_cast<uint32_t>(sub)});
  };
  // Shards and KV slices: live always, in both programs.
  for (size_t i = 0; i < p.shards.size(); ++i) {
    const auto& sh = p.shards[i];
    auto type = model::dtype_of(p.spec, sh.tensor.kind);
    add(sh.chip, sh.offset, model::shard_data_bytes(type, sh.range), 0, always,
        0, item_kind::shard, i);
    add(sh.chip, sh.scales_offset, model::shard_scale_bytes(type, sh.range), 0,
        always, 0, item_kind::shard_scales, i);
  }
  for (size_t i = 0; i < p.kv_slices.size(); ++i) {
    const auto& kv = p.kv_slices[i];
    add(kv.chip, kv.k_offset, kv.bytes_each(p.spec.head_dim), 0, always, 0,
        item_kind::kv_k, i);
    add(kv.chip, kv.v_offset, kv.bytes_each(p.spec.head_dim), 0, always, 0,
        item_kind::kv_v, i);
  }
  // Outputs: live from the op's start to its last reader's end (an op of
  // the node, or a transfer sending it); carried to the next step, or read
  // by the host after it (samples): always.
  std::vector<std::vector<uint64_t>> last(prog.ops.size());
  std::vector<std::vector<bool>> kept(prog.ops.size());
  for (const auto& o : prog.ops) {
    last[o.id].assign(o.outputs.size(), 0);
    kept[o.id].assign(o.outputs.size(), o.kind == op_kind::sample);
  }
  for (const auto& o : prog.ops)
    for (const auto& in : o.inputs)
      if (in.producer < prog.ops.size() &&
          in.producer_output < last[in.producer].size()) {
        if (in.carried)
          kept[in.producer][in.producer_output] = true;
        else
          last[in.producer][in.producer_output] = std::max<uint64_t>(
              last[in.producer][in.producer_output], verify_context::end(o));
      }
  for (const auto& t : prog.transfers)
    if (t.after_op < prog.ops.size() &&
        t.src_output < last[t.after_op].size())
      last[t.after_op][t.src_output] = std::max<uint64_t>(
          last[t.after_op][t.src_output], verify_context::end(t));
  for (const auto& o : prog.ops) {
    for (size_t k = 0; k < o.outputs.size(); ++k) {
      uint64_t t1 = std::max<uint64_t>(last[o.id][k], verify_context::end(o));
      add(o.chip, o.outputs[k].offset, o.outputs[k].bytes(), o.start_slot,
          kept[o.id][k] ? always : t1, period, item_kind::output, o.id, k);
    }
    add(o.chip, o.scratch_offset, o.scratch_bytes, o.start_slot,
        verify_context::end(o), period, item_kind::scratch, o.id);
  }
  // Receive windows, one per parity: from the transfer's start to its
  // reader's end, every (buffers x period) slots.
  for (const auto& t : prog.transfers) {
    uint64_t reader_end =
        t.consumer_op < prog.ops.size()
            ? verify_context::end(prog.ops[t.consumer_op])
            : verify_context::end(t);
    for (size_t q = 0; q < t.dst_offsets.size(); ++q)
      add(t.dst, prog.arenas[t.dst].recv_base + t.dst_offsets[q], t.bytes,
          t.start_slot, reader_end, period * t.dst_offsets.size(),
          item_kind::recv_window, t.id, q);
  }
  // Send windows hold the sent outputs (checked above through the outputs
  // they carry); their framing sits just before each.
  std::map<std::pair<uint32_t, uint64_t>, bool> framed;
  for (const auto& t : prog.transfers)
    if (framed.emplace(std::pair{t.src, t.src_offset}, true).second &&
        t.after_op < prog.ops.size())
      add(t.src, prog.arenas[t.src].send_base + t.src_offset, 24, 0, always, 0,
          item_kind::framing, t.id);

  std::sort(items.begin(), items.end(), [](const item& a, const item& b) {
    return std::tie(a.node, a.begin, a.kind, a.index, a.sub) <
           std::tie(b.node, b.begin, b.kind, b.index, b.sub);
  });
  // Per node, sweep by offset; compare each item with those still open.
  std::vector<const item*> open;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    uint32_t n = it.node;
    if (i == 0 || items[i - 1].node != n)
      open.clear();
    if (!c.is_host_node(n) && it.end > c.chip.sram_bytes)
      v.fail("memory-bounds", v.node(n) + ": " + name_of(v, prog, it) +
                                  " at SRAM [" + std::to_string(it.begin) +
                                  ", " + std::to_string(it.end) +
                                  ") is beyond its " +
                                  std::to_string(c.chip.sram_bytes) +
                                  " bytes");
    std::erase_if(open, [&](const item* o) { return o->end <= it.begin; });
    for (const auto* o : open)
      if (meet(*o, it))
        v.fail("memory-overlap",
               v.node(n) + ": " + name_of(v, prog, *o) + " and " +
                   name_of(v, prog, it) + " share SRAM [" +
                   std::to_string(it.begin) + ", " +
                   std::to_string(std::min(o->end, it.end)) +
                   ") while both are live");
    // A buffer must also be free again before its next step reuses it.
    if (it.t1 != always && it.repeat > 0 && it.t1 - it.t0 > it.repeat)
      v.fail("memory-overlap",
             v.node(n) + ": " + name_of(v, prog, it) + " is live for " +
                 std::to_string(it.t1 - it.t0) + " slots, longer than the " +
                 std::to_string(it.repeat) +
                 " after which the next step rewrites it");
    open.push_back(&it);
  }
}

} // namespace lockstep::planner::detail
