// The verifier's dataflow half: the program read as a program, from the
// plan and the model's shapes alone (no builder code).
//
// Rules: input-source (every input has one earlier source, where that
// source wrote it), transfer-shape (a transfer carries exactly its
// producer's output), op-shape (every operand has the shape its op kind
// needs by the model), weights (an op reads shards on its own chip),
// compute-once (every head, MLP row and vocabulary row of every layer and
// micro-batch computed exactly once), layer-order (x flows through the
// layers in order), token-loop and prefill.

#include "planner/detail/verify_context.hpp"

#include "model/shard_ops.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace lockstep::planner::detail {

namespace {

using model::tensor_kind;

// What a buffer holds, for the layer-order rule: x entering half h of
// layer l is stage 2l + h; partial sums of that half are partial(2l + h).
struct stage {
  enum kind_t : uint8_t { none, rows, embedding, x, partial, normed, logits };
  kind_t kind = none;
  uint32_t index = 0;
  friend bool operator==(const stage&, const stage&) = default;
};

std::string text(const stage& s) {
  switch (s.kind) {
  case stage::rows:
    return "the row table";
  case stage::embedding:
    return "embedding rows";
  case stage::x:
    return "x entering layer " + std::to_string(s.index / 2) +
           (s.index % 2 == 0 ? " (attention)" : " (MLP)");
  case stage::partial:
    return "partial sums of layer " + std::to_string(s.index / 2) +
           (s.index % 2 == 0 ? " attention" : " MLP");
  case stage::normed:
    return "normed x";
  case stage::logits:
    return "logits";
  default:
    return "nothing";
  }
}

class dataflow_checker {
public:
  dataflow_checker(verify_context& v, const step_program& prog)
      : v_(v)
      , p_(v.p)
      , s_(v.p.spec)
      , prog_(prog)
      , stages_(prog.ops.size()) {}

  void run() {
    check_transfers();
    // Producers start (and end) before their readers: start order visits
    // sources first.
    std::vector<const op*> order;
    for (const auto& o : prog_.ops)
      order.push_back(&o);
    std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
      return a->start_slot < b->start_slot;
    });
    for (const auto* o : order) {
      stages_[o->id].assign(o->outputs.size(), stage{});
      check_sources(*o);
      check_shapes(*o);
    }
    check_once();
    check_loop();
  }

private:
  std::string op_name(const op& o) const { return v_.op_name(prog_, o); }
  std::string tr_name(const transfer& t) const { return v_.tr_name(prog_, t); }
  static uint64_t end(const op& o) { return verify_context::end(o); }
  static uint64_t end(const transfer& t) { return verify_context::end(t); }

  buffer_shape x_shape(uint32_t rows) const {
    return {rows, 0, s_.d_model, 1, true};
  }
  static std::string shape_text(const buffer_shape& b) {
    return "{rows " + std::to_string(b.rows) + ", cols [" +
           std::to_string(b.col_first) + ", +" + std::to_string(b.cols) +
           "), pieces " + std::to_string(b.pieces) +
           (b.row_table ? ", row table}" : "}");
  }

  // The op output a transfer carries: its first hop's producer.
  std::pair<const op*, uint32_t> source_of(const transfer& t) const {
    const transfer* h = &t;
    for (size_t guard = 0;
         h->after_transfer != no_id && guard < prog_.transfers.size(); ++guard)
      h = &prog_.transfers[h->after_transfer];
    return {&prog_.ops[h->after_op], h->src_output};
  }

  void check_transfers() {
    for (const auto& t : prog_.transfers) {
      const auto& prod = prog_.ops[t.after_op];
      if (t.src_output >= prod.outputs.size()) {
        v_.fail("transfer-shape", tr_name(t) + ": its producer " +
                                      op_name(prod) + " has no output " +
                                      std::to_string(t.src_output));
        continue;
      }
      const auto& out = prod.outputs[t.src_output];
      if (t.payload_bytes != out.bytes())
        v_.fail("transfer-shape",
                tr_name(t) + ": carries " + std::to_string(t.payload_bytes) +
                    " bytes, its producer's output " + shape_text(out.shape) +
                    " is " + std::to_string(out.bytes()));
      uint64_t window = prog_.arenas[t.src].send_base + t.src_offset +
                        transport::frame_overhead_bytes;
      if (window != out.offset)
        v_.fail("transfer-shape", tr_name(t) + ": sends from SRAM " +
                                      std::to_string(window) + ", " +
                                      op_name(prod) + " writes its output at " +
                                      std::to_string(out.offset));
    }
  }

  // Every input: one source, earlier, of this micro-batch, where it wrote.
  void check_sources(const op& o) {
    for (size_t i = 0; i < o.inputs.size(); ++i) {
      const auto& in = o.inputs[i];
      auto name = op_name(o) + ": input " + std::to_string(i);
      auto bad = [&](const std::string& what) {
        v_.fail("input-source", name + " " + what);
      };
      if ((in.transfer == no_id) == (in.producer == no_id)) {
        bad("has no single source");
        continue;
      }
      const op* src = nullptr;
      uint32_t src_out = 0;
      if (in.transfer != no_id) {
        if (in.transfer >= prog_.transfers.size()) {
          bad("reads transfer " + std::to_string(in.transfer) +
              ", which the program does not have");
          continue;
        }
        const auto& t = prog_.transfers[in.transfer];
        if (t.dst != o.chip || t.consumer_op != o.id || t.consumer_input != i)
          bad("reads " + tr_name(t) + ", which is not delivered to it");
        if (end(t) > o.start_slot)
          bad("reads " + tr_name(t) + " before it arrives");
        uint64_t window = prog_.arenas[t.dst].recv_base +
                          (t.dst_offsets.empty() ? 0 : t.dst_offsets[0]) +
                          transport::frame_overhead_bytes;
        if (in.offset != window)
          bad("is read at SRAM " + std::to_string(in.offset) + ", " +
              tr_name(t) + " lands at " + std::to_string(window));
        if (in.bytes() != t.payload_bytes)
          v_.fail("transfer-shape", name + " " + shape_text(in.shape) +
                                        " needs " +
                                        std::to_string(in.bytes()) +
                                        " bytes, " + tr_name(t) + " carries " +
                                        std::to_string(t.payload_bytes));
        std::tie(src, src_out) = source_of(t);
      } else {
        if (in.producer >= prog_.ops.size() ||
            prog_.ops[in.producer].chip != o.chip ||
            in.producer_output >= prog_.ops[in.producer].outputs.size()) {
          bad("names no output of an op on " + v_.node(o.chip));
          continue;
        }
        src = &prog_.ops[in.producer];
        src_out = in.producer_output;
        bool loop = prog_.kind == program_kind::decode &&
                    o.kind == op_kind::feed && src->kind == op_kind::sample &&
                    src->micro_batch == o.micro_batch;
        if (in.carried != loop)
          bad(in.carried ? "is carried from the previous step but is not the "
                           "token loop"
                         : "is the token loop but not carried");
        if (!in.carried && (end(*src) > o.start_slot ||
                            std::find(o.after_ops.begin(), o.after_ops.end(),
                                      src->id) == o.after_ops.end()))
          bad("reads " + op_name(*src) + ", which does not end before it");
        const auto& out = src->outputs[src_out];
        if (out.offset != in.offset || out.shape != in.shape)
          bad("is read at SRAM " + std::to_string(in.offset) + " as " +
              shape_text(in.shape) + ", " + op_name(*src) + " writes " +
              shape_text(out.shape) + " at " + std::to_string(out.offset));
      }
      if (src->micro_batch != o.micro_batch && !in.carried)
        bad("comes from micro-batch " + std::to_string(src->micro_batch));
      if (src->outputs.size() > src_out && src->outputs[src_out].shape != in.shape)
        v_.fail("transfer-shape", name + " " + shape_text(in.shape) + " is not " +
                                      op_name(*src) + "'s output " +
                                      shape_text(src->outputs[src_out].shape));
    }
  }

  stage stage_of(const op& o, size_t i) const {
    const auto& in = o.inputs[i];
    if (in.transfer != no_id && in.transfer < prog_.transfers.size()) {
      auto [src, k] = source_of(prog_.transfers[in.transfer]);
      return k < stages_[src->id].size() ? stages_[src->id][k] : stage{};
    }
    if (in.producer != no_id && in.producer < prog_.ops.size() &&
        in.producer_output < stages_[in.producer].size())
      return stages_[in.producer][in.producer_output];
    return {};
  }

  // The shard of `kind` at weights[i], on the op's chip and layer.
  const shard* weight(const op& o, size_t i, tensor_kind kind,
                      uint32_t layer) {
    if (i >= o.weights.size() || o.weights[i] >= p_.shards.size()) {
      v_.fail("op-shape", op_name(o) + ": weight " + std::to_string(i) +
                              " (" + model::to_string(kind) + ") missing");
      return nullptr;
    }
    const auto& sh = p_.shards[o.weights[i]];
    if (sh.tensor.kind != kind || sh.tensor.layer != layer) {
      v_.fail("op-shape", op_name(o) + ": weight " + std::to_string(i) +
                              " is " + model::to_string(sh.tensor) +
                              ", expected " +
                              model::to_string(model::tensor_id{layer, kind}));
      return nullptr;
    }
    if (sh.chip != o.chip) {
      v_.fail("weights", op_name(o) + ": reads " +
                             model::to_string(sh.tensor) + " held by " +
                             v_.node(sh.chip));
      return nullptr;
    }
    return &sh;
  }

  void expect(const op& o, bool ok, const std::string& what) {
    if (!ok)
      v_.fail("op-shape", op_name(o) + ": " + what);
  }
  void expect_shape(const op& o, const char* which, size_t i,
                    const std::vector<operand>& list, const buffer_shape& want) {
    if (i >= list.size()) {
      v_.fail("op-shape", op_name(o) + ": " + which + " " +
                              std::to_string(i) + " missing");
      return;
    }
    if (list[i].shape != want)
      v_.fail("op-shape", op_name(o) + ": " + which + " " + std::to_string(i) +
                              " is " + shape_text(list[i].shape) +
                              ", the model needs " + shape_text(want));
  }
  void expect_stage(const op& o, size_t i, stage want) {
    if (i >= o.inputs.size())
      return;
    auto got = stage_of(o, i);
    if (got != want)
      v_.fail("layer-order", op_name(o) + ": input " + std::to_string(i) +
                                 " holds " + text(got) + ", needs " +
                                 text(want));
  }

  // x read whole (one input), or as slices tiling it in order (what the
  // all-gather brought, read where it arrived), all holding `want`.
  void expect_x_input(const op& o, uint32_t rows, stage want) {
    if (o.inputs.size() <= 1) {
      expect_shape(o, "input", 0, o.inputs, x_shape(rows));
      expect_stage(o, 0, want);
      return;
    }
    uint32_t at = 0;
    for (size_t i = 0; i < o.inputs.size(); ++i) {
      const auto& sh = o.inputs[i].shape;
      expect_shape(o, "input", i, o.inputs, {rows, at, sh.cols, 1, true});
      expect_stage(o, i, want);
      at = sh.col_first + sh.cols;
    }
    expect(o, at == s_.d_model, "its slices do not tile x");
  }

  // A split matmul's outputs: slices tiling [0, d_model) in order with the
  // part's pieces, or x itself when the part is the whole reduction.
  void expect_part_outputs(const op& o, uint32_t rows, uint32_t b0,
                           uint32_t b1, uint32_t nb, uint32_t stage_index,
                           uint64_t scratch_floats) {
    bool whole = b0 == 0 && b1 == nb;
    auto pieces =
        static_cast<uint32_t>(model::canonical_pieces(nb, b0, b1).size());
    if (whole) {
      expect(o, o.outputs.size() == 1,
             "the whole reduction writes x, one output");
      expect(o, o.inputs.size() == 1,
             "the whole reduction reads x whole (it adds it back)");
      expect_shape(o, "output", 0, o.outputs, x_shape(rows));
      scratch_floats += uint64_t{rows} * s_.d_model;
      set_stages(o, {stage::x, stage_index + 1});
    } else {
      uint32_t at = 0;
      for (size_t k = 0; k < o.outputs.size(); ++k) {
        const auto& sh = o.outputs[k].shape;
        expect_shape(o, "output", k, o.outputs,
                     {rows, at, sh.cols, pieces, false});
        at = sh.col_first + sh.cols;
      }
      expect(o, at == s_.d_model && !o.outputs.empty(),
             "its outputs do not tile the " + std::to_string(s_.d_model) +
                 " elements of x");
      set_stages(o, {stage::partial, stage_index});
    }
    expect(o, o.scratch_bytes >= scratch_floats * 4,
           "scratch of " + std::to_string(o.scratch_bytes) +
               " bytes, needs " + std::to_string(scratch_floats * 4));
  }
  // What a half-layer op's outputs hold, by their shape, before its
  // shards are checked: one fault (e.g. a shard on another chip) must not
  // make everything downstream look out of order too.
  void assume_part_stages(const op& o, uint32_t stage_index) {
    bool whole = o.outputs.size() == 1 && o.outputs[0].shape.row_table;
    set_stages(o, whole ? stage{stage::x, stage_index + 1}
                        : stage{stage::partial, stage_index});
  }
  void set_stages(const op& o, stage st) {
    for (auto& s : stages_[o.id])
      s = st;
  }

  void check_shapes(const op& o) {
    uint32_t mb = o.micro_batch;
    uint32_t rows = prog_.rows(mb), seqs = prog_.sequences(mb);
    uint32_t d = s_.d_model, hd = s_.head_dim;
    buffer_shape row_table{rows, 0, 0, 1, true};
    switch (o.kind) {
    case op_kind::feed:
      expect(o, o.chip == p_.sampler, "a feed away from the sampler host");
      expect_shape(o, "output", 0, o.outputs, row_table);
      expect(o, o.inputs.size() == (prog_.kind == program_kind::decode),
             prog_.kind == program_kind::decode
                 ? "a decode feed reads the previous step's sampled rows"
                 : "a prefill feed reads nothing");
      set_stages(o, {stage::rows, 0});
      return;
    case op_kind::embed: {
      expect_shape(o, "input", 0, o.inputs, row_table);
      expect_stage(o, 0, {stage::rows, 0});
      expect_shape(o, "output", 0, o.outputs, {rows, 0, d, 1, false});
      weight(o, 0, tensor_kind::tok_embedding, model::global_layer);
      set_stages(o, {stage::embedding, 0});
      return;
    }
    case op_kind::select: {
      expect_shape(o, "input", 0, o.inputs, row_table);
      expect_stage(o, 0, {stage::rows, 0});
      const auto& b = o.vocab_bounds;
      expect(o, b.size() == o.inputs.size() && b.size() >= 2 &&
                    b.front() == 0 && b.back() == s_.vocab &&
                    std::is_sorted(b.begin(), b.end()),
             "its vocabulary bounds do not split [0, " +
                 std::to_string(s_.vocab) + ") among its inputs");
      for (size_t i = 1; i < o.inputs.size(); ++i) {
        expect_shape(o, "input", i, o.inputs, {rows, 0, d, 1, false});
        expect_stage(o, i, {stage::embedding, 0});
        // The part must hold exactly the vocabulary rows it is credited
        // with.
        const auto& in = o.inputs[i];
        const op* src = nullptr;
        if (in.transfer != no_id && in.transfer < prog_.transfers.size())
          src = source_of(prog_.transfers[in.transfer]).first;
        else if (in.producer != no_id && in.producer < prog_.ops.size())
          src = &prog_.ops[in.producer];
        if (src != nullptr && src->kind == op_kind::embed &&
            !src->weights.empty() && src->weights[0] < p_.shards.size() &&
            i < b.size()) {
          const auto& r = p_.shards[src->weights[0]].range;
          expect(o, r.row_begin == b[i - 1] && r.row_end == b[i],
                 "input " + std::to_string(i) + " holds vocabulary [" +
                     std::to_string(r.row_begin) + ", " +
                     std::to_string(r.row_end) + "), credited with [" +
                     std::to_string(b[i - 1]) + ", " + std::to_string(b[i]) +
                     ")");
        }
      }
      expect_shape(o, "output", 0, o.outputs, x_shape(rows));
      set_stages(o, {stage::x, 0});
      return;
    }
    case op_kind::attention: {
      uint32_t l = o.layer;
      expect_x_input(o, rows, {stage::x, 2 * l});
      assume_part_stages(o, 2 * l);
      weight(o, 0, tensor_kind::attn_norm, l);
      const auto* wq = weight(o, 1, tensor_kind::wq, l);
      const auto* wk = weight(o, 2, tensor_kind::wk, l);
      const auto* wv = weight(o, 3, tensor_kind::wv, l);
      const auto* wo = weight(o, 4, tensor_kind::wo, l);
      if (wq == nullptr || wk == nullptr || wv == nullptr || wo == nullptr)
        return;
      uint32_t h0 = wq->range.row_begin / hd, h1 = wq->range.row_end / hd;
      auto [kv0, kv1] = model::kv_heads_of(s_, h0, h1);
      expect(o, wq->range.row_begin % hd == 0 && wq->range.row_end % hd == 0 &&
                    h0 < h1 && wk->range.row_begin == kv0 * hd &&
                    wk->range.row_end == kv1 * hd && wv->range == wk->range &&
                    wo->range.col_begin == h0 * hd &&
                    wo->range.col_end == h1 * hd,
             "its wq, wk, wv and wo shards are not one head range");
      heads_[{mb, l}].push_back({h0, h1, o.id});
      if (o.kv >= p_.kv_slices.size()) {
        v_.fail("op-shape", op_name(o) + ": no KV slice");
      } else {
        const auto& kv = p_.kv_slices[o.kv];
        if (kv.chip != o.chip)
          v_.fail("weights", op_name(o) + ": its KV slice is on " +
                                 v_.node(kv.chip));
        expect(o, kv.layer == l && kv.kv_head_begin == kv0 &&
                      kv.kv_head_end == kv1 && kv.sequences == p_.batch &&
                      kv.positions == p_.context,
               "its KV slice is not layer " + std::to_string(l) +
                   "'s kv heads [" + std::to_string(kv0) + ", " +
                   std::to_string(kv1) + ") for " +
                   std::to_string(p_.batch) + " sequences of " +
                   std::to_string(p_.context) + " positions");
      }
      uint32_t nb = model::blocks_of(s_.q_dim());
      expect_part_outputs(o, rows, h0 * hd / model::reduction_block_elems,
                          model::blocks_of(uint64_t{h1} * hd), nb, 2 * l,
                          model::attention_scratch_floats(
                              s_, h1 - h0, kv1 - kv0, rows, p_.context) +
                              assembled_x_floats(o));
      return;
    }
    case op_kind::mlp: {
      uint32_t l = o.layer;
      expect_x_input(o, rows, {stage::x, 2 * l + 1});
      assume_part_stages(o, 2 * l + 1);
      weight(o, 0, tensor_kind::mlp_norm, l);
      const auto* gate = weight(o, 1, tensor_kind::w_gate, l);
      const auto* up = weight(o, 2, tensor_kind::w_up, l);
      const auto* down = weight(o, 3, tensor_kind::w_down, l);
      if (gate == nullptr || up == nullptr || down == nullptr)
        return;
      uint32_t f0 = gate->range.row_begin, f1 = gate->range.row_end;
      expect(o, up->range == gate->range && down->range.col_begin == f0 &&
                    down->range.col_end == f1,
             "its gate, up and down shards are not one d_ff range");
      rows_[{mb, l}].push_back({f0, f1, o.id});
      expect_part_outputs(
          o, rows, f0 / model::reduction_block_elems, model::blocks_of(f1),
          model::blocks_of(s_.d_ff), 2 * l + 1,
          model::mlp_scratch_floats(s_, f1 - f0, rows) + assembled_x_floats(o));
      return;
    }
    case op_kind::combine: {
      bool root = !o.parts.empty() && o.parts.front().first_block == 0 &&
                  o.parts.back().end_block == o.n_blocks;
      expect(o, o.inputs.size() == o.parts.size() + (root ? 1 : 0),
             "a combine reads its parts" +
                 std::string{root ? " and the residual" : ""});
      uint32_t cols = o.out_end > o.out_first ? o.out_end - o.out_first : 0;
      // Every part holds partial sums of one half of one layer.
      stage want{};
      size_t node_i = 0;
      for (size_t p = 0; p < o.parts.size() && p < o.inputs.size(); ++p) {
        const auto& part = o.parts[p];
        auto n = static_cast<uint32_t>(
            part.end_block > part.first_block && part.end_block <= o.n_blocks
                ? model::canonical_pieces(o.n_blocks, part.first_block,
                                          part.end_block)
                      .size()
                : 0);
        node_i += n;
        expect_shape(o, "input", p, o.inputs, {rows, o.out_first, cols, n, false});
        auto got = stage_of(o, p);
        if (p == 0)
          want = got;
        if (got.kind != stage::partial || got != want ||
            got.index / 2 != o.layer)
          v_.fail("layer-order", op_name(o) + ": part " + std::to_string(p) +
                                     " holds " + text(got) +
                                     ", not partial sums of layer " +
                                     std::to_string(o.layer));
      }
      if (root) {
        // The residual: x, or any slice of it holding the output's
        // elements (the chip's own slice, when x was read as slices).
        size_t r = o.inputs.size() - 1;
        const auto& res = o.inputs[r].shape;
        expect(o,
               res.rows == rows && res.row_table && res.pieces == 1 &&
                   res.col_first <= o.out_first &&
                   res.col_first + res.cols >= o.out_end &&
                   res.col_first + res.cols <= s_.d_model,
               "its residual " + shape_text(res) +
                   " does not hold x's elements [" +
                   std::to_string(o.out_first) + ", " +
                   std::to_string(o.out_end) + ")");
        expect_stage(o, r, {stage::x, want.index});
        expect_shape(o, "output", 0, o.outputs,
                     {rows, o.out_first, cols, 1, true});
        set_stages(o, {stage::x, want.index + 1});
      } else if (!o.parts.empty()) {
        auto outs = model::canonical_pieces(o.n_blocks,
                                            o.parts.front().first_block,
                                            o.parts.back().end_block);
        expect_shape(o, "output", 0, o.outputs,
                     {rows, o.out_first, cols,
                      static_cast<uint32_t>(outs.size()), false});
        set_stages(o, want);
      }
      return;
    }
    case op_kind::gather: {
      stage first = o.inputs.empty() ? stage{} : stage_of(o, 0);
      if (first.kind != stage::x)
        v_.fail("layer-order",
                op_name(o) + ": slice 0 holds " + text(first) + ", not x");
      expect_x_input(o, rows, first);
      expect_shape(o, "output", 0, o.outputs, x_shape(rows));
      set_stages(o, first);
      return;
    }
    case op_kind::final_norm:
      expect_shape(o, "input", 0, o.inputs, x_shape(rows));
      expect_stage(o, 0, {stage::x, 2 * s_.n_layers});
      expect_shape(o, "output", 0, o.outputs, x_shape(seqs));
      weight(o, 0, tensor_kind::final_norm, model::global_layer);
      ++finals_[mb];
      set_stages(o, {stage::normed, 0});
      return;
    case op_kind::lm_head: {
      expect_shape(o, "input", 0, o.inputs, x_shape(seqs));
      expect_stage(o, 0, {stage::normed, 0});
      const auto* sh = weight(o, 0, tensor_kind::lm_head, model::global_layer);
      if (sh != nullptr) {
        expect_shape(o, "output", 0, o.outputs,
                     {seqs, sh->range.row_begin, sh->range.rows(), 1, true});
        vocab_[mb].push_back({sh->range.row_begin, sh->range.row_end, o.id});
      }
      set_stages(o, {stage::logits, 0});
      return;
    }
    case op_kind::sample: {
      expect(o, o.chip == p_.sampler, "a sample away from the sampler host");
      uint32_t at = 0;
      for (size_t i = 0; i < o.inputs.size(); ++i) {
        const auto& sh = o.inputs[i].shape;
        expect_shape(o, "input", i, o.inputs, {seqs, at, sh.cols, 1, true});
        expect_stage(o, i, {stage::logits, 0});
        at = sh.col_first + sh.cols;
      }
      expect(o, at == s_.vocab,
             "its logit slices do not tile the vocabulary [0, " +
                 std::to_string(s_.vocab) + ")");
      expect_shape(o, "output", 0, o.outputs, {seqs, 0, 0, 1, true});
      set_stages(o, {stage::rows, 1});
      return;
    }
    case op_kind::forward:
      expect(o, o.inputs.size() == 1 && o.outputs.size() == 1 &&
                    o.inputs[0].shape == o.outputs[0].shape,
             "a forward copies one buffer unchanged");
      if (!o.inputs.empty())
        set_stages(o, stage_of(o, 0));
      return;
    }
  }

  struct range {
    uint32_t first, end, op;
  };
  // Ranges must tile [0, total) exactly once.
  void expect_once(const std::vector<range>& list, uint32_t total,
                   const std::string& what) {
    auto sorted = list;
    std::sort(sorted.begin(), sorted.end(),
              [](auto& a, auto& b) { return a.first < b.first; });
    uint32_t at = 0;
    for (const auto& r : sorted) {
      if (r.first != at) {
        v_.fail("compute-once",
                what + ": [" + std::to_string(std::min(at, r.first)) + ", " +
                    std::to_string(std::max(at, r.first)) + ") computed " +
                    (r.first > at ? "by no op" : "twice (op " +
                                                     std::to_string(r.op) +
                                                     ")"));
        return;
      }
      at = r.end;
    }
    if (at != total)
      v_.fail("compute-once", what + ": [" + std::to_string(at) + ", " +
                                  std::to_string(total) +
                                  ") computed by no op");
  }

  void check_once() {
    for (uint32_t mb = 0; mb < prog_.micro_batches; ++mb) {
      if (prog_.sequences(mb) == 0)
        continue;
      auto tag = std::string{to_string(prog_.kind)} + " micro-batch " +
                 std::to_string(mb);
      for (uint32_t l = 0; l < s_.n_layers; ++l) {
        expect_once(heads_[{mb, l}], s_.n_heads,
                    tag + " layer " + std::to_string(l) + " heads");
        expect_once(rows_[{mb, l}], s_.d_ff,
                    tag + " layer " + std::to_string(l) + " MLP rows");
      }
      expect_once(vocab_[mb], s_.vocab, tag + " LM-head rows");
      if (finals_[mb] != 1)
        v_.fail("compute-once", tag + ": " + std::to_string(finals_[mb]) +
                                    " final norms");
    }
  }

  // Decode: each micro-batch's sample writes the rows its next step's feed
  // sends. Prefill: one chunk of one sequence per step, fed by the host.
  void check_loop() {
    std::map<uint32_t, std::vector<const op*>> feeds, samples;
    for (const auto& o : prog_.ops) {
      if (o.kind == op_kind::feed)
        feeds[o.micro_batch].push_back(&o);
      if (o.kind == op_kind::sample)
        samples[o.micro_batch].push_back(&o);
    }
    bool decode = prog_.kind == program_kind::decode;
    const char* rule = decode ? "token-loop" : "prefill";
    if (prog_.ops.empty()) {
      v_.fail(rule, std::string{"the "} + to_string(prog_.kind) +
                        " program is missing");
      return;
    }
    if (!decode && (prog_.micro_batches != 1 || prog_.tokens == 0 ||
                    prog_.sequences(0) != 1))
      v_.fail(rule, "a prefill step is one chunk of tokens of one sequence");
    for (uint32_t mb = 0; mb < prog_.micro_batches; ++mb) {
      if (prog_.sequences(mb) == 0)
        continue;
      auto tag = std::string{to_string(prog_.kind)} + " micro-batch " +
                 std::to_string(mb);
      if (feeds[mb].size() != 1 || samples[mb].size() != 1) {
        v_.fail(rule, tag + " has " + std::to_string(feeds[mb].size()) +
                          " feeds and " + std::to_string(samples[mb].size()) +
                          " samples, needs one each");
        continue;
      }
      const auto& feed = *feeds[mb][0];
      const auto& sample = *samples[mb][0];
      if (decode && (feed.inputs.size() != 1 || !feed.inputs[0].carried ||
                     feed.inputs[0].producer != sample.id))
        v_.fail(rule, tag + ": its feed does not send the rows its sample "
                            "wrote in the previous step");
    }
  }

  verify_context& v_;
  const plan& p_;
  const model::model_spec& s_;
  const step_program& prog_;
  std::vector<std::vector<stage>> stages_; // per op output
  std::map<std::pair<uint32_t, uint32_t>, std::vector<range>> heads_, rows_;
  std::map<uint32_t, std::vector<range>> vocab_;
  std::map<uint32_t, uint32_t> finals_;
};

} // namespace

void verify_dataflow(verify_context& v, const step_program& prog) {
  dataflow_checker c{v, prog};
  c.run();
}

} // namespace lockstep::planner::detail
