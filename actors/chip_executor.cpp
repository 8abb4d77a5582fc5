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
    if (o.kind == op_kind::combine) {
      bool root = o.inputs.size() == o.parts.size() + 1;
      if (!root && o.inputs.size() != o.parts.size())
        return fail(errc::bad_program, o,
                    "combine inputs do not match its parts");
      auto rule = model::combine_rule::make(o.n_blocks, o.nodes, root);
      if (!rule)
        return fail(errc::bad_program, o, render(rule.error()));
      rules_.emplace(o.id, std::move(*rule));
    }
    if (o.kind == op_kind::attention) {
      if (o.kv >= plan_.kv_slices.size())
        return fail(errc::bad_program, o, "attention without a KV slice");
      const auto& kv = plan_.kv_slices[o.kv];
      uint64_t each = kv.bytes_each(s.head_dim);
      if (kv.chip != node_ || !inside(kv.k_offset, each) ||
          !inside(kv.v_offset, each))
        return fail(errc::bad_program, o,
                    "its KV slice is not in this chip's SRAM");
      uint64_t per_seq = uint64_t{kv.positions} *
                         (kv.kv_head_end - kv.kv_head_begin) * s.head_dim;
      auto& k = kv_k_[o.id];
      auto& v = kv_v_[o.id];
      for (uint32_t q = 0; q < kv.sequences; ++q) {
        k.push_back(at<float>(kv.k_offset) + q * per_seq);
        v.push_back(at<float>(kv.v_offset) + q * per_seq);
      }
    }
    if (auto err = check_kind(o))
      return err;
  }
  return {};
}

// What each kind reads and writes, against its operands' shapes: the
// compute (chip_executor_compute.cpp) relies on exactly these facts.
caf::error chip_executor::check_kind(const op& o) {
  const auto& s = plan_.spec;
  uint32_t d = s.d_model;
  auto need = [&](bool ok, const std::string& what) -> caf::error {
    return ok ? caf::error{} : fail(errc::bad_program, o, what);
  };
  auto in = [&](size_t i) -> const buffer_shape& { return o.inputs[i].shape; };
  auto out = [&](size_t k) -> const buffer_shape& {
    return o.outputs[k].shape;
  };
  auto is_x = [&](const buffer_shape& b, uint32_t rows) {
    return b.rows == rows && b.col_first == 0 && b.cols == d &&
           b.pieces == 1 && b.row_table;
  };
  auto shard_is = [&](size_t i, model::tensor_kind kind) {
    return i < o.weights.size() &&
           plan_.shards[o.weights[i]].tensor.kind == kind;
  };
  // x as slices, in order, tiling it, one row table each (an all-gather's
  // buffers, or a gather's inputs).
  auto tiles_x = [&]() {
    uint32_t at = 0;
    for (const auto& i : o.inputs)
      if (i.shape.rows != in(0).rows || !i.shape.row_table ||
          i.shape.pieces != 1 || i.shape.col_first != at)
        return false;
      else
        at += i.shape.cols;
    return !o.inputs.empty() && at == d;
  };
  if (o.kind != op_kind::feed && o.kind != op_kind::select &&
      o.kind != op_kind::sample && o.kind != op_kind::gather &&
      o.kind != op_kind::combine && o.kind != op_kind::attention &&
      o.kind != op_kind::mlp && o.inputs.size() != 1)
    return need(false, "reads one input, not " +
                           std::to_string(o.inputs.size()));
  if (o.outputs.size() != 1 && o.kind != op_kind::attention &&
      o.kind != op_kind::mlp)
    return need(false, "writes one output, not " +
                           std::to_string(o.outputs.size()));
  switch (o.kind) {
  case op_kind::forward:
    return need(in(0).bytes() == out(0).bytes(),
                "a forward copies one buffer to one of the same size");
  case op_kind::feed:
    return need(loop_ != nullptr && out(0).row_table && out(0).cols == 0 &&
                    (o.inputs.empty() ||
                     (o.inputs.size() == 1 && in(0).row_table &&
                      in(0).rows == out(0).rows)),
                "a feed writes a row table (from the previous rows) and "
                "runs on the sampler");
  case op_kind::sample: {
    auto ok = loop_ != nullptr && !o.inputs.empty() && out(0).row_table &&
              out(0).cols == 0;
    for (const auto& i : o.inputs)
      ok = ok && i.shape.row_table && i.shape.rows == out(0).rows &&
           i.shape.pieces == 1 && i.shape.col_first + i.shape.cols <= s.vocab;
    return need(ok, "a sample reads logit rows with their row table and "
                    "writes one row per sequence");
  }
  case op_kind::embed:
    return need(in(0).row_table && out(0).rows == in(0).rows &&
                    out(0).cols == d && !out(0).row_table &&
                    out(0).pieces == 1 &&
                    shard_is(0, model::tensor_kind::tok_embedding),
                "an embed reads rows and writes d_model values per row from "
                "its embedding shard");
  case op_kind::select: {
    auto ok = !o.inputs.empty() && in(0).row_table &&
              is_x(out(0), in(0).rows) &&
              o.vocab_bounds.size() == o.inputs.size();
    for (size_t i = 1; ok && i < o.inputs.size(); ++i)
      ok = in(i).rows == in(0).rows && in(i).cols == d && !in(i).row_table;
    return need(ok, "a select reads rows and one [rows][d_model] part per "
                    "vocabulary range, and writes x");
  }
  case op_kind::attention:
  case op_kind::mlp: {
    bool attn = o.kind == op_kind::attention;
    if (o.weights.size() != (attn ? 5u : 4u) || !tiles_x())
      return need(false, "reads x (whole or its slices) and its " +
                             std::string{attn ? "5" : "4"} + " shards");
    uint32_t rows = in(0).rows;
    if (o.scratch_bytes < planner::assembled_x_floats(o) * 4)
      return need(false, "its scratch cannot hold x assembled");
    if (o.outputs.size() == 1 && out(0).row_table)
      return need(is_x(out(0), rows) && o.inputs.size() == 1,
                  "its fused output is not x, or it reads x in slices");
    auto pieces = static_cast<uint32_t>(
        model::shard_pieces(weight(o.weights.back())).size());
    uint32_t at = 0;
    for (size_t k = 0; k < o.outputs.size(); ++k) {
      const auto& b = out(k);
      if (b.rows != rows || b.col_first != at || b.pieces != pieces ||
          b.row_table)
        return need(false, "output " + std::to_string(k) +
                               " is not the next d_model slice of " +
                               std::to_string(pieces) + "-piece partials");
      at += b.cols;
    }
    return need(at == d && !o.outputs.empty(),
                "its outputs do not tile d_model");
  }
  case op_kind::combine: {
    const auto& rule = rules_.at(o.id);
    bool root = o.inputs.size() == o.parts.size() + 1;
    const auto& b = out(0);
    size_t nodes = 0;
    for (size_t p = 0; p < o.parts.size(); ++p) {
      const auto& i = in(p);
      if (i.rows != b.rows || i.cols != b.cols || i.row_table)
        return need(false, "part " + std::to_string(p) +
                               " is not its slice of partials");
      nodes += i.pieces;
    }
    if (nodes != rule.inputs())
      return need(false, "its parts carry " + std::to_string(nodes) +
                             " tree nodes, its combine needs " +
                             std::to_string(rule.inputs()));
    if (root) {
      const auto& r = in(o.inputs.size() - 1);
      return need(r.rows == b.rows && r.row_table && b.row_table &&
                      b.pieces == 1 && b.col_first >= r.col_first &&
                      b.col_first + b.cols <= r.col_first + r.cols,
                  "its residual does not hold its output slice");
    }
    return need(!b.row_table && b.pieces == rule.outputs().size(),
                "a partial combine writes its output nodes");
  }
  case op_kind::gather:
    return need(is_x(out(0), out(0).rows) && tiles_x() &&
                    in(0).rows == out(0).rows,
                "a gather reads the slices of x and writes x");
  case op_kind::final_norm:
    return need(is_x(in(0), in(0).rows) && out(0).rows > 0 &&
                    in(0).rows % out(0).rows == 0 &&
                    is_x(out(0), out(0).rows) &&
                    shard_is(0, model::tensor_kind::final_norm),
                "a final norm reads x and writes one row per sequence");
  case op_kind::lm_head: {
    if (!shard_is(0, model::tensor_kind::lm_head))
      return need(false, "an LM head reads its shard");
    const auto& r = plan_.shards[o.weights[0]].range;
    return need(is_x(in(0), in(0).rows) && out(0).rows == in(0).rows &&
                    out(0).row_table && out(0).pieces == 1 &&
                    out(0).col_first == r.row_begin &&
                    out(0).cols == r.rows(),
                "an LM head writes its vocabulary slice's logits");
  }
  }
  return need(false, "unknown op kind");
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
}

caf::error chip_executor::check_sendable(uint32_t t, uint64_t step) const {
  const auto& tr = prog_.transfers[t];
  const auto& prod = prog_.ops[tr.after_op];
  uint64_t payload =
      prog_.arenas[node_].send_base + tr.src_offset + frame;
  auto it = written_.find(payload);
  if (it == written_.end() || it->second.writer != prod.id ||
      it->second.transfer || it->second.step != step ||
      it->second.end != payload + tr.payload_bytes)
    return fail(errc::missing_input, prod,
                "transfer " + std::to_string(t) + " (slot " +
                    std::to_string(tr.start_slot) +
                    ") would send a window this op did not write in step " +
                    std::to_string(step));
  return {};
}

std::span<std::byte> chip_executor::send_window(uint32_t t) {
  const auto& tr = prog_.transfers[t];
  return sram_.subspan(prog_.arenas[node_].send_base + tr.src_offset,
                       tr.bytes);
}

std::vector<std::vector<uint32_t>> chip_executor::sends_by_op() const {
  std::vector<size_t> position(prog_.ops.size(), ops_.size());
  for (size_t i = 0; i < ops_.size(); ++i)
    position[ops_[i]] = i;
  std::vector<std::vector<uint32_t>> sends(ops_.size());
  for (const auto& t : prog_.transfers)
    if (t.after_op < position.size() && position[t.after_op] < ops_.size())
      sends[position[t.after_op]].push_back(t.id);
  return sends;
}

std::span<std::byte> chip_executor::receive_window(uint32_t t,
                                                   uint64_t step) {
  const auto& tr = prog_.transfers[t];
  return sram_.subspan(prog_.arenas[node_].recv_base +
                           tr.dst_offsets[step % tr.dst_offsets.size()],
                       tr.bytes);
}

bool chip_executor::ready(uint32_t id, uint64_t step) const {
  const auto& o = prog_.ops[id];
  for (size_t i = 0; i < o.inputs.size(); ++i) {
    const auto& in = o.inputs[i];
    if (in.carried)
      continue;
    auto it = written_.find(input_offset(o, i, step));
    bool by_transfer = in.transfer != no_id;
    if (it == written_.end() || it->second.step != step ||
        it->second.transfer != by_transfer ||
        it->second.writer != (by_transfer ? in.transfer : in.producer))
      return false;
  }
  return true;
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
  return {};
}

} // namespace lockstep::actors
