// The compute of each op kind: operands resolved to SRAM, then the
// shard-level model API — the same functions the reference engine calls.

#include "actors/chip_executor.hpp"

#include <algorithm>
#include <cstring>

namespace lockstep::actors {

using model::token_row;
using planner::buffer_shape;
using planner::op;
using planner::op_kind;

caf::error chip_executor::run_compute(const op& o, uint64_t step,
                                      model::worker_pool* pool) {
  const auto& s = plan_.spec;
  uint32_t d = s.d_model;
  auto table = [&](uint64_t offset, const buffer_shape& sh) {
    return std::span<token_row>{at<token_row>(offset), sh.rows};
  };
  auto values = [&](uint64_t offset, const buffer_shape& sh) {
    return at<float>(offset + sh.table_bytes());
  };
  auto in_table = [&](size_t i) {
    return table(input_offset(o, i, step), o.inputs[i].shape);
  };
  auto in_values = [&](size_t i) {
    return values(input_offset(o, i, step), o.inputs[i].shape);
  };
  auto out_table = [&](size_t k) {
    return table(o.outputs[k].offset, o.outputs[k].shape);
  };
  auto out_values = [&](size_t k) {
    return values(o.outputs[k].offset, o.outputs[k].shape);
  };
  auto copy_table = [&](std::span<const token_row> from,
                        std::span<token_row> to) {
    std::memcpy(to.data(), from.data(),
                std::min(from.size(), to.size()) * sizeof(token_row));
  };
  auto math = [&](const caf::error& err) -> caf::error {
    return err ? fail(errc::compute_failed, o, render(err)) : caf::error{};
  };
  std::span<float> scratch{at<float>(o.scratch_offset), o.scratch_bytes / 4};
  // x from its slices (a gather's inputs, or an attention or MLP op's when
  // it reads the all-gather's buffers where they arrived), into `x`, rows
  // of d; their row tables must agree.
  auto assemble = [&](float* x) -> caf::error {
    auto first = in_table(0);
    for (size_t i = 1; i < o.inputs.size(); ++i) {
      auto other = in_table(i);
      if (other.size() != first.size() ||
          std::memcmp(other.data(), first.data(),
                      first.size() * sizeof(token_row)) != 0)
        return fail(errc::compute_failed, o,
                    "the row tables of its slices disagree (input " +
                        std::to_string(i) + ")");
    }
    for (size_t i = 0; i < o.inputs.size(); ++i) {
      const auto& sh = o.inputs[i].shape;
      const float* v = in_values(i);
      for (uint32_t t = 0; t < sh.rows; ++t)
        std::memcpy(x + size_t{t} * d + sh.col_first, v + size_t{t} * sh.cols,
                    size_t{sh.cols} * 4);
    }
    return {};
  };
  // Attention and MLP read x whole, or assemble it at the end of their
  // scratch (planner::assembled_x_floats); the rest is their work space.
  std::span<float> work = scratch;
  const float* x_in = nullptr;
  if (o.kind == op_kind::attention || o.kind == op_kind::mlp) {
    if (auto n = planner::assembled_x_floats(o); n == 0) {
      x_in = in_values(0);
    } else {
      float* x = scratch.data() + scratch.size() - n;
      if (auto err = assemble(x))
        return err;
      work = scratch.first(scratch.size() - n);
      x_in = x;
    }
  }
  // The rows of input i worth computing (model::active_prefix): all of
  // them if it carries no row table.
  auto computed_rows = [&](size_t i) {
    return o.inputs[i].shape.row_table ? model::active_prefix(in_table(i))
                                       : o.inputs[i].shape.rows;
  };

  // Attention and MLP share the output side: slices of partial sums, or —
  // the whole reduction on this chip — x plus the residual, in place.
  auto partial_or_fused = [&](uint32_t reduction_dim, auto&& part)
      -> caf::error {
    if (o.outputs.size() == 1 && o.outputs[0].shape.row_table) {
      auto rows = computed_rows(0);
      size_t need = size_t{rows} * d;
      if (work.size() < need)
        return fail(errc::bad_program, o, "scratch too small");
      float* tmp = work.data() + work.size() - need;
      const uint32_t cuts[] = {0, d};
      if (auto err = part({cuts, {&tmp, 1}}, work.first(work.size() - need)))
        return math(err);
      uint32_t nb = model::blocks_of(reduction_dim);
      model::tree_node root{0, model::tree_span(nb)};
      auto rule = model::combine_rule::make(nb, {&root, 1});
      const float* parts[] = {tmp};
      const uint32_t one[] = {1};
      copy_table(in_table(0), out_table(0));
      return math(model::combine(*rule, parts, one, rows, d, in_values(0), d,
                                 out_values(0)));
    }
    std::vector<uint32_t> cuts;
    std::vector<float*> dst;
    for (size_t k = 0; k < o.outputs.size(); ++k) {
      cuts.push_back(o.outputs[k].shape.col_first);
      dst.push_back(out_values(k));
    }
    cuts.push_back(o.outputs.back().shape.col_first +
                   o.outputs.back().shape.cols);
    if (cuts.front() != 0 || cuts.back() != d)
      return fail(errc::bad_program, o, "outputs do not tile d_model");
    return math(part({cuts, dst}, work));
  };

  switch (o.kind) {
  case op_kind::forward:
    std::memcpy(at<std::byte>(o.outputs[0].offset),
                at<std::byte>(input_offset(o, 0, step)), o.outputs[0].bytes());
    return {};

  case op_kind::feed: {
    // The token loop: the rows the previous step's sample wrote, if it
    // ran (the first step of a generation has none; the coordinator
    // supplies its rows).
    std::span<const token_row> carried;
    if (!o.inputs.empty() && step > 0) {
      auto it = written_.find(o.inputs[0].offset);
      if (it != written_.end() && it->second.writer == o.inputs[0].producer &&
          it->second.step + 1 == step)
        carried = in_table(0);
    }
    return loop_->feed(prog_.kind, o.micro_batch, step, carried,
                       out_table(0));
  }

  case op_kind::embed: {
    auto held = model::embed_rows(weight(o.weights.at(0)), in_table(0),
                                  out_values(0));
    return held ? caf::error{} : math(held.error());
  }

  case op_kind::select: {
    std::vector<const float*> parts;
    for (size_t i = 1; i < o.inputs.size(); ++i)
      parts.push_back(in_values(i));
    copy_table(in_table(0), out_table(0));
    return math(model::select_embedding(in_table(0), o.vocab_bounds, parts, d,
                                        out_values(0)));
  }

  case op_kind::attention: {
    const auto& kv = plan_.kv_slices[o.kv];
    model::kv_cache_slice slice{kv.kv_head_begin, kv.kv_head_end, kv.positions,
                                s.head_dim, kv_k_[o.id], kv_v_[o.id]};
    model::attention_shard w{weight(o.weights[0]), weight(o.weights[1]),
                             weight(o.weights[2]), weight(o.weights[3]),
                             weight(o.weights[4]), 0, 0};
    w.head_begin = w.wq.range().row_begin / s.head_dim;
    w.head_end = w.wq.range().row_end / s.head_dim;
    auto x = x_in;
    auto rows = in_table(0);
    return partial_or_fused(s.q_dim(), [&](const model::piece_output& out,
                                           std::span<float> scr) {
      return model::attention_part(s, w, rope_, x, rows, slice, out, scr,
                                   pool);
    });
  }

  case op_kind::mlp: {
    model::mlp_shard w{weight(o.weights[0]), weight(o.weights[1]),
                       weight(o.weights[2]), weight(o.weights[3])};
    auto x = x_in;
    auto rows = computed_rows(0);
    return partial_or_fused(s.d_ff, [&](const model::piece_output& out,
                                        std::span<float> scr) {
      return model::mlp_part(s, w, x, rows, out, scr, pool);
    });
  }

  case op_kind::combine: {
    std::vector<const float*> parts;
    std::vector<uint32_t> counts;
    for (size_t p = 0; p < o.parts.size(); ++p) {
      parts.push_back(in_values(p));
      counts.push_back(o.inputs[p].shape.pieces);
    }
    const auto& out = o.outputs[0].shape;
    const float* residual = nullptr;
    size_t ld = 0;
    uint32_t rows = out.rows;
    if (o.inputs.size() == o.parts.size() + 1) {
      const auto& res = o.inputs.back().shape;
      residual = in_values(o.inputs.size() - 1) + (out.col_first -
                                                   res.col_first);
      ld = res.cols;
      copy_table(in_table(o.inputs.size() - 1), out_table(0));
      rows = std::min(rows, computed_rows(o.inputs.size() - 1));
    }
    return math(model::combine(rules_.at(o.id), parts, counts, rows,
                               out.cols, residual, ld, out_values(0)));
  }

  case op_kind::gather:
    if (auto err = assemble(out_values(0)))
      return err;
    copy_table(in_table(0), out_table(0));
    return {};

  case op_kind::final_norm: {
    // Each sequence's emitting row (its last token this step), if any.
    auto rows = in_table(0);
    auto out_rows = out_table(0);
    const float* x = in_values(0);
    float* y = out_values(0);
    uint32_t per = static_cast<uint32_t>(rows.size() / out_rows.size());
    for (size_t i = 0; i < out_rows.size(); ++i) {
      size_t pick = rows.size();
      for (size_t r = i * per; r < (i + 1) * per; ++r)
        if ((rows[r].flags & model::row_active) != 0 &&
            (rows[r].flags & model::row_emits) != 0)
          pick = r;
      if (pick == rows.size()) {
        out_rows[i] = {0, 0, rows[i * per].sequence, 0};
        std::fill(y + i * d, y + (i + 1) * d, 0.0f);
        continue;
      }
      out_rows[i] = rows[pick];
      model::final_norm(s, weight(o.weights.at(0)), x + pick * d, y + i * d);
    }
    return {};
  }

  case op_kind::lm_head: {
    const auto& out = o.outputs[0].shape;
    copy_table(in_table(0), out_table(0));
    model::lm_head_rows(weight(o.weights.at(0)), in_values(0), out.rows,
                        out_values(0), out.cols, pool);
    return {};
  }

  case op_kind::sample: {
    // The head chips' logit slices side by side: full vocabulary rows.
    auto rows = in_table(0);
    std::vector<float> logits(rows.size() * size_t{s.vocab});
    for (size_t i = 0; i < o.inputs.size(); ++i) {
      const auto& sh = o.inputs[i].shape;
      if (sh.col_first + sh.cols > s.vocab || sh.rows != rows.size())
        return fail(errc::bad_program, o, "a logit slice off the vocabulary");
      const float* v = in_values(i);
      for (uint32_t t = 0; t < sh.rows; ++t)
        std::memcpy(logits.data() + size_t{t} * s.vocab + sh.col_first,
                    v + size_t{t} * sh.cols, size_t{sh.cols} * 4);
    }
    return loop_->sample(prog_.kind, o.micro_batch, step, rows, logits,
                         s.vocab, out_table(0));
  }
  }
  return fail(errc::bad_program, o, "unknown op kind");
}

} // namespace lockstep::actors
