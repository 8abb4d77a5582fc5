#include "actors/chip_executor.hpp"

#include "transport/payload_frame.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace lockstep::actors {

using planner::buffer_shape;
using planner::no_id;
using planner::op;
using planner::op_kind;
using planner::operand;

namespace {

constexpr uint64_t frame = transport::frame_overhead_bytes;

std::string range_text(uint64_t offset, uint64_t bytes) {
  return "[" + std::to_string(offset) + ", +" + std::to_string(bytes) + ")";
}

} // namespace

chip_executor::chip_executor(const planner::plan& p,
                             const planner::cluster_config& config,
                             planner::program_kind kind, uint32_t node,
                             std::span<std::byte> sram,
                             const model::rope_table& rope, token_loop* loop)
    : plan_(p)
    , config_(config)
    , prog_(p.program(kind))
    , node_(node)
    , sram_(sram)
    , rope_(rope)
    , loop_(loop) {}

caf::expected<std::unique_ptr<chip_executor>>
chip_executor::make(const planner::plan& p,
                    const planner::cluster_config& config,
                    planner::program_kind kind, uint32_t node,
                    std::span<std::byte> sram, const model::rope_table& rope,
                    token_loop* loop) {
  std::unique_ptr<chip_executor> e{
      new chip_executor(p, config, kind, node, sram, rope, loop)};
  if (auto err = e->bind())
    return err;
  return e;
}

std::string chip_executor::where(const op& o) const {
  return "chip " + transport::to_string(config_.ref(o.chip)) + ", " +
         planner::to_string(prog_.kind) + " op " + std::to_string(o.id) +
         " (" + planner::to_string(o.kind) + ", slot " +
         std::to_string(o.start_slot) + ")";
}

caf::error chip_executor::fail(errc code, const op& o,
                               const std::string& what) const {
  return caf::make_error(code, where(o) + ": " + what);
}

model::tensor_view chip_executor::weight(uint32_t index) const {
  const auto& sh = plan_.shards[index];
  auto type = model::dtype_of(plan_.spec, sh.tensor.kind);
  return {model::shape_of(plan_.spec, sh.tensor.kind), type, sh.range,
          sram_.data() + sh.offset,
          reinterpret_cast<const float*>(sram_.data() + sh.scales_offset)};
}

// Every operand inside the arena and where its source put it; shapes as the
// op's kind needs them; weights and KV on this chip. After this, run() only
// checks what changes per step: that inputs were written.
caf::error chip_executor::bind() {
  const auto& s = plan_.spec;
  uint64_t size = sram_.size();
  auto inside = [&](uint64_t offset, uint64_t bytes) {
    return offset <= size && bytes <= size - offset;
  };
  for (const auto& o : prog_.ops)
    if (o.chip == node_)
      ops_.push_back(o.id);
  std::stable_sort(ops_.begin(), ops_.end(), [&](uint32_t a, uint32_t b) {
    return prog_.ops[a].start_slot < prog_.ops[b].start_slot;
  });
  // The framing of every send window of this node (one per sent output).
  for (const auto& t : prog_.transfers) {
    if (t.src != node_)
      continue;
    uint64_t window = prog_.arenas[node_].send_base + t.src_offset;
    if (std::any_of(framed_.begin(), framed_.end(),
                    [&](const framed_output& f) { return f.window == window; }))
      continue;
    const auto& prod = prog_.ops[t.after_op];
    if (t.src_output >= prod.outputs.size() ||
        prod.outputs[t.src_output].offset != window + frame ||
        !inside(window, t.bytes))
      return fail(errc::bad_program, prod,
                  "output " + std::to_string(t.src_output) +
                      " is not the send window of transfer " +
                      std::to_string(t.id));
    std::vector<std::byte> scratch(t.bytes);
    auto framed = transport::write_frame(scratch);
    if (!framed)
      return fail(errc::bad_program, prod, render(framed.error()));
    framed_output f{prod.id, t.src_output, window, {}};
    std::copy_n(scratch.begin(), frame, f.header.begin());
    framed_.push_back(f);
  }
  for (auto id : ops_) {
    const auto& o = prog_.ops[id];
    for (size_t i = 0; i < o.inputs.size(); ++i) {
      const auto& in = o.inputs[i];
      auto name = "input " + std::to_string(i) + " " +
                  range_text(in.offset, in.bytes());
      if (in.transfer != no_id) {
        if (in.transfer >= prog_.transfers.size())
          return fail(errc::bad_program, o, name + ": no transfer " +
                                                std::to_string(in.transfer));
        const auto& t = prog_.transfers[in.transfer];
        const auto& a = prog_.arenas[node_];
        if (t.dst != node_ || t.dst_offsets.empty() ||
            t.payload_bytes != in.bytes() ||
            in.offset != a.recv_base + t.dst_offsets[0] + frame)
          return fail(errc::bad_program, o,
                      name + " is not the receive window of transfer " +
                          std::to_string(t.id));
        for (auto d : t.dst_offsets)
          if (!inside(a.recv_base + d, t.bytes))
            return fail(errc::bad_program, o, name + ": window outside SRAM");
      } else if (in.producer != no_id) {
        if (in.producer >= prog_.ops.size() ||
            prog_.ops[in.producer].chip != node_ ||
            in.producer_output >= prog_.ops[in.producer].outputs.size())
          return fail(errc::bad_program, o,
                      name + ": its producer is not an op of this chip");
        const auto& out =
            prog_.ops[in.producer].outputs[in.producer_output];
        if (out.offset != in.offset || out.shape != in.shape)
          return fail(errc::bad_program, o,
                      name + " is not where op " +
                          std::to_string(in.producer) + " writes it " +
                          range_text(out.offset, out.bytes()));
      } else {
        return fail(errc::bad_program, o, name + " has no source");
      }
      if (!inside(in.offset, in.bytes()))
        return fail(errc::bad_program, o, name + " is outside SRAM");
    }
    for (size_t i = 0; i < o.outputs.size(); ++i)
      if (!inside(o.outputs[i].offset, o.outputs[i].bytes()))
        return fail(errc::bad_program, o,
                    "output " + std::to_string(i) + " " +
                        range_text(o.outputs[i].offset,
                                   o.outputs[i].bytes()) +
                        " is outside SRAM");
    if (!inside(o.scratch_offset, o.scratch_bytes))
      return fail(errc::bad_program, o, "scratch outside SRAM");
    for (auto w : o.weights) {
      if (w >= plan_.shards.size() || plan_.shards[w].chip != node_)
        return fail(errc::bad_program, o,
                    "weight shard " + std::to_string(w) + " is not on it");
      const auto& sh = plan_.shards[w];
      auto type = model::dtype_of(s, sh.tensor.kind);
      if (!inside(sh.offset, model::shard_data_bytes(type, sh.range)) ||
          !inside(sh.scales_offset, model::shard_scale_bytes(type, sh.range)))
        return fail(errc::bad_program, o,
                    "shard " + model::to_string(sh.tensor) + " outside SRAM");
    }
    // Kind-specific facts the compute relies on.
    auto need = [&](bool ok, const std::string& what) -> caf::error {
      return ok ? caf::error{} : fail(errc::bad_program, o, what);
    };
    caf::error err;
    switch (o.kind) {
    case op_kind::attention: {
      err = need(o.kv < plan_.kv_slices.size() && o.weights.size() == 5 &&
                     o.inputs.size() == 1 && !o.outputs.empty(),
                 "attention needs its x, 5 shards and a KV slice");
      if (err)
        break;
      const auto& kv = plan_.kv_slices[o.kv];
      uint64_t each = kv.bytes_each(s.head_dim);
      err = need(kv.chip == node_ && inside(kv.k_offset, each) &&
                     inside(kv.v_offset, each),
                 "its KV slice is not in this chip's SRAM");
      if (err)
        break;
      uint64_t per_seq = uint64_t{kv.positions} *
                         (kv.kv_head_end - kv.kv_head_begin) * s.head_dim;
      auto& k = kv_k_[o.id];
      auto& v = kv_v_[o.id];
      for (uint32_t q = 0; q < kv.sequences; ++q) {
        k.push_back(at<float>(kv.k_offset) + q * per_seq);
        v.push_back(at<float>(kv.v_offset) + q * per_seq);
      }
      break;
    }
    case op_kind::mlp:
      err = need(o.weights.size() == 4 && o.inputs.size() == 1 &&
                     !o.outputs.empty(),
                 "mlp needs its x and 4 shards");
      break;
    case op_kind::combine: {
      bool root = o.inputs.size() == o.parts.size() + 1;
      err = need(root || o.inputs.size() == o.parts.size(),
                 "combine inputs do not match its parts");
      if (err)
        break;
      auto rule = model::combine_rule::make(o.n_blocks, o.nodes, root);
      if (!rule)
        return fail(errc::bad_program, o, render(rule.error()));
      rules_.emplace(o.id, std::move(*rule));
      break;
    }
    case op_kind::feed:
    case op_kind::sample:
      err = need(loop_ != nullptr, "a host op without the token loop");
      break;
    case op_kind::forward:
      err = need(o.inputs.size() == 1 && o.outputs.size() == 1 &&
                     o.inputs[0].bytes() == o.outputs[0].bytes(),
                 "a forward copies one buffer to one of the same size");
      break;
    default:
      break;
    }
    if (err)
      return err;
    for (const auto& out : o.outputs)
      if (out.shape.cols > 0 && out.shape.rows == 0)
        return fail(errc::bad_program, o, "an output without rows");
  }
  return {};
}

uint64_t chip_executor::input_offset(const op& o, size_t i,
                                     uint64_t step) const {
  const auto& in = o.inputs[i];
  if (in.transfer == no_id)
    return in.offset;
  const auto& t = prog_.transfers[in.transfer];
  return prog_.arenas[node_].recv_base + t.dst_offsets[step % t.dst_offsets.size()] +
         frame;
}

void chip_executor::wrote(uint64_t offset, uint64_t bytes, uint32_t writer,
                          bool transfer, uint64_t step) {
  // Whatever this overwrites is gone: a later reader of it finds no record.
  uint64_t end = offset + bytes;
  auto it = written_.lower_bound(offset);
  if (it != written_.begin() && std::prev(it)->second.end > offset)
    --it;
  while (it != written_.end() && it->first < end)
    it = written_.erase(it);
  written_[offset] = {end, writer, transfer, step};
}

void chip_executor::note_arrival(uint32_t t, uint64_t step) {
  const auto& tr = prog_.transfers[t];
  uint64_t window = prog_.arenas[node_].recv_base +
                    tr.dst_offsets[step % tr.dst_offsets.size()];
  wrote(window + frame, tr.payload_bytes, t, true, step);
  ++counters_.arrivals;
  counters_.bytes_in += tr.bytes;
}

std::span<std::byte> chip_executor::send_window(uint32_t t) {
  const auto& tr = prog_.transfers[t];
  return sram_.subspan(prog_.arenas[node_].send_base + tr.src_offset,
                       tr.bytes);
}

std::span<std::byte> chip_executor::receive_window(uint32_t t,
                                                   uint64_t step) {
  const auto& tr = prog_.transfers[t];
  return sram_.subspan(prog_.arenas[node_].recv_base +
                           tr.dst_offsets[step % tr.dst_offsets.size()],
                       tr.bytes);
}

caf::error chip_executor::check_inputs(const op& o, uint64_t step) const {
  for (size_t i = 0; i < o.inputs.size(); ++i) {
    const auto& in = o.inputs[i];
    if (in.carried)
      continue; // the previous step's (checked by the feed)
    uint64_t offset = input_offset(o, i, step);
    auto it = written_.find(offset);
    bool by_transfer = in.transfer != no_id;
    uint32_t writer = by_transfer ? in.transfer : in.producer;
    if (it == written_.end() || it->second.end != offset + in.bytes() ||
        it->second.writer != writer || it->second.transfer != by_transfer ||
        it->second.step != step) {
      std::string source =
          by_transfer
              ? "transfer " + std::to_string(in.transfer) + " from " +
                    transport::to_string(
                        config_.ref(prog_.transfers[in.transfer].src))
              : "op " + std::to_string(in.producer);
      return fail(errc::missing_input, o,
                  "input " + std::to_string(i) + " at SRAM " +
                      range_text(offset, in.bytes()) + " was not delivered" +
                      " by " + source + " in step " + std::to_string(step));
    }
  }
  return {};
}

caf::error chip_executor::run(uint32_t id, uint64_t step,
                              model::worker_pool* pool) {
  const auto& o = prog_.ops[id];
  if (auto err = check_inputs(o, step))
    return err;
  if (auto err = run_compute(o, step, pool))
    return err;
  for (const auto& f : framed_)
    if (f.op == id)
      std::copy(f.header.begin(), f.header.end(), sram_.data() + f.window);
  for (uint32_t k = 0; k < o.outputs.size(); ++k)
    wrote(o.outputs[k].offset, o.outputs[k].bytes(), o.id, false, step);
  ++counters_.ops;
  return {};
}

} // namespace lockstep::actors
