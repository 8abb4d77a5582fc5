// The verifier reads the program as a program: hand-built bad plans, each
// a verified plan broken in one place, for the dataflow rules (input-source,
// transfer-shape, op-shape, weights, compute-once, layer-order), memory
// (memory-overlap, memory-bounds), the token loop and prefill. Each expects
// exactly the rule it breaks, or says why a minimal set fires.

#include "tests/planner/verifier_fixture.hpp"

namespace lockstep::planner {
namespace {

using test::append_copy;
using test::end_slot;
using test::find_op;
using test::idle_slot;
using test::joined;
using test::load;
using test::lone_transfer;
using test::make;
using test::report_of;
using test::sends_of;
using test::shard_on;
using test::verifier;

// --- The program as a program: dataflow ----------------------------------

TEST_F(verifier, input_read_where_no_op_or_transfer_wrote_it) {
  // An op reads its arrived input 8 bytes past where its transfer's
  // payload lands: not the bytes any op or transfer produced for it.
  uint32_t id = no_id;
  auto r = report([&](plan& p) {
    auto& o = find_op(p.decode, [](const op& o) {
      return o.kind == op_kind::combine && !o.inputs.empty() &&
             o.inputs[0].transfer != no_id;
    });
    id = o.id;
    o.inputs[0].offset += 8;
  });
  EXPECT_RULES(r, "input-source");
  EXPECT_VIOLATION(joined(r),
                   "decode op " + std::to_string(id) + " (combine on h");
  EXPECT_VIOLATION(joined(r), "input 0 is read at SRAM");
}

TEST_F(verifier, inputs_read_from_each_others_transfers) {
  // A combine reads part 0 from the transfer that delivers part 1 and the
  // other way round (same shapes, so only the wiring is wrong): the
  // canonical order would be broken silently.
  auto r = report([](plan& p) {
    auto& o = find_op(p.decode, [](const op& o) {
      return o.kind == op_kind::combine && o.inputs.size() >= 3 &&
             o.inputs[0].transfer != no_id && o.inputs[1].transfer != no_id &&
             o.inputs[0].shape == o.inputs[1].shape;
    });
    std::swap(o.inputs[0].transfer, o.inputs[1].transfer);
    std::swap(o.inputs[0].offset, o.inputs[1].offset);
  });
  EXPECT_RULES(r, "input-source");
  EXPECT_VIOLATION(joined(r), "which is not delivered to it");
}

TEST_F(verifier, transfer_carrying_another_size_than_its_ends) {
  // transfer-shape: the transfer's payload no longer matches its producer's
  // output nor its consumer's input (both of which keep the model's
  // shapes). Smaller, and framed consistently, so link capacity, windows
  // and memory stay fine.
  uint32_t id = no_id;
  auto r = report([&](plan& p) {
    auto& t = lone_transfer(p.decode);
    id = t.id;
    t.payload_bytes -= 8;
    t.bytes = transport::framed_bytes(t.payload_bytes);
  });
  EXPECT_RULES(r, "transfer-shape");
  EXPECT_VIOLATION(joined(r), "decode transfer " + std::to_string(id) + " ");
}

TEST_F(verifier, operand_shapes_not_the_models) {
  // op-shape: an attention root combine's output slice loses its row table
  // — consistently at the combine, every transfer carrying it and every
  // reader (so producer, transfers and consumers agree, transfer-shape
  // stays quiet), but the model's x slices carry the row table.
  uint32_t id = no_id;
  auto r = report([&](plan& p) {
    auto& prog = p.decode;
    auto& c = find_op(prog, [&](const op& o) {
      if (o.kind != op_kind::combine || o.parts.empty() ||
          o.parts.front().first_block != 0 ||
          o.parts.back().end_block != o.n_blocks)
        return false;
      // x's slices are read by gathers (the head's) and by attention and
      // MLP ops (where the all-gather delivered them).
      for (auto* t : sends_of(prog, o.id, 0))
        if (auto k = prog.ops[t->consumer_op].kind; k != op_kind::gather &&
                                                    k != op_kind::attention &&
                                                    k != op_kind::mlp)
          return false;
      return true;
    });
    id = c.id;
    auto shape = c.outputs[0].shape;
    shape.row_table = false;
    c.outputs[0].shape = shape;
    for (auto& o : prog.ops)
      for (auto& in : o.inputs)
        if (in.producer == c.id && in.producer_output == 0)
          in.shape = shape;
    for (auto* t : sends_of(prog, c.id, 0)) {
      t->payload_bytes = shape.bytes();
      t->bytes = transport::framed_bytes(t->payload_bytes);
      prog.ops[t->consumer_op].inputs[t->consumer_input].shape = shape;
    }
  });
  EXPECT_RULES(r, "op-shape");
  EXPECT_VIOLATION(joined(r),
                   "decode op " + std::to_string(id) + " (combine on h");
}

TEST_F(verifier, x_slices_read_out_of_order) {
  // op-shape: an MLP op reads x as the all-gather's slices, which must tile
  // x in order (the executor assembles them so); two swapped (their
  // transfers told) are named by the op.
  uint32_t id = no_id;
  auto r = report([&](plan& p) {
    auto& prog = p.decode;
    auto& o = find_op(prog, [](const op& o) {
      return o.kind == op_kind::mlp && o.inputs.size() >= 2;
    });
    id = o.id;
    std::swap(o.inputs[0], o.inputs[1]);
    for (size_t i : {0, 1})
      if (auto t = o.inputs[i].transfer; t != no_id)
        prog.transfers[t].consumer_input = static_cast<uint32_t>(i);
  });
  EXPECT_RULES(r, "op-shape");
  EXPECT_VIOLATION(joined(r), "decode op " + std::to_string(id) + " (mlp on ");
  EXPECT_VIOLATION(joined(r), "input 0 is ");
}

TEST_F(verifier, part_computed_twice) {
  // compute-once: the last layer's MLP part of one chip runs again at the
  // end of the step (a stray copy of the op: same input and weights, its
  // outputs read by nobody, written where the original's were, which every
  // reader has finished with by then). The chip is one of the last group
  // that does not gather x for the final norm, so nothing reuses the x it
  // reads after the original: no buffer is live any longer than before.
  // The op reads x as the all-gather's slices where they arrived, and a
  // transfer is delivered to one reader: the copy also reads transfers
  // delivered to the original (input-source).
  uint32_t copy = no_id, original = no_id;
  auto r = report([&](plan& p) {
    auto& prog = p.decode;
    uint32_t chip = p.group_chips.back(); // the last group's last chip
    const auto& mlp = find_op(prog, [&](const op& o) {
      return o.kind == op_kind::mlp && o.chip == chip &&
             o.layer == p.spec.n_layers - 1;
    });
    original = mlp.id;
    auto& x = append_copy(prog, mlp.id, prog.slots_per_step);
    copy = x.id;
    prog.slots_per_step = end_slot(x);
    prog.period_slots = prog.slots_per_step; // decode: one step at a time
  });
  EXPECT_RULES(r, "compute-once", "input-source");
  EXPECT_VIOLATION(joined(r), "MLP rows: [");
  EXPECT_VIOLATION(joined(r), "computed twice (op " + std::to_string(copy));
  EXPECT_VIOLATION(joined(r), "input-source: decode op " +
                                  std::to_string(copy) + " (mlp on ");
  EXPECT_EQ(joined(r).find("decode op " + std::to_string(original) + " "),
            std::string::npos)
      << "the original op is not at fault";
}

TEST_F(verifier, part_computed_by_no_op) {
  // compute-once, the other way: an MLP op claims the d_ff rows of another
  // chip of its group. Those tiles are not on its chip, so it reads
  // weights it lacks (weights), and its own rows are computed by no op
  // (compute-once): the verifier credits a part only to an op that holds
  // its tiles. The op's outputs still count as its layer's partial sums, so
  // nothing downstream reports layer-order. No mutation leaves a part
  // uncomputed without taking its op off its tiles (this), changing its
  // layer (layer-order) or dropping an op that others read (input-source),
  // so the minimal set is asserted.
  auto r = report([](plan& p) {
    auto& prog = p.decode;
    auto& o = find_op(prog, [](const op& o) { return o.kind == op_kind::mlp; });
    const auto& other = find_op(prog, [&](const op& x) {
      return x.kind == op_kind::mlp && x.layer == o.layer &&
             x.micro_batch == o.micro_batch && x.chip != o.chip;
    });
    o.weights = other.weights;
  });
  EXPECT_RULES(r, "compute-once", "weights");
  EXPECT_VIOLATION(joined(r), "MLP rows: [0, 256) computed by no op");
}

TEST_F(verifier, attention_reading_another_chips_norm) {
  // weights: an attention op reads its RMSNorm weights from the shard of
  // another chip of its group (the same tensor, just not in its SRAM).
  uint32_t id = no_id;
  auto r = report([&](plan& p) {
    auto& o = find_op(p.decode,
                      [](const op& o) { return o.kind == op_kind::attention; });
    id = o.id;
    const auto& other = find_op(p.decode, [&](const op& x) {
      return x.kind == op_kind::attention && x.layer == o.layer &&
             x.chip != o.chip;
    });
    o.weights[0] = other.weights[0];
  });
  EXPECT_RULES(r, "weights");
  EXPECT_VIOLATION(joined(r),
                   "decode op " + std::to_string(id) + " (attention on h");
  EXPECT_VIOLATION(joined(r), ": reads l0.attn_norm held by h");
}

TEST_F(verifier, attention_without_its_kv_slice) {
  // weights: an attention op appends to and reads the KV slice of another
  // chip that caches the same kv heads (GQA: tiny-64 on 4 chips, two
  // chips per kv head).
  auto r = report([](plan& p) {
    auto& o = find_op(p.decode,
                      [](const op& o) { return o.kind == op_kind::attention; });
    const auto& mine = p.kv_slices[o.kv];
    for (uint32_t i = 0; i < p.kv_slices.size(); ++i) {
      const auto& kv = p.kv_slices[i];
      if (kv.chip != mine.chip && kv.layer == mine.layer &&
          kv.kv_head_begin == mine.kv_head_begin &&
          kv.kv_head_end == mine.kv_head_end) {
        o.kv = i;
        return;
      }
    }
    throw std::runtime_error("no chip shares the kv heads");
  });
  EXPECT_RULES(r, "weights");
  EXPECT_VIOLATION(joined(r), "its KV slice is on h");
}

TEST(verifier_layers, layers_computed_out_of_order) {
  // layer-order: in a group holding two layers, the ops of layer 0 and
  // layer 1 swap their layers (weights and KV slices of the swapped layer,
  // on the same chips). Every part of every layer is still computed once
  // with the right tiles and shapes; only the order is wrong: x entering
  // layer 0 goes through layer 1 first.
  auto c = load("local-8");
  auto good = make(c, "tiny-8");
  ASSERT_TRUE(good.verdict.ok());
  ASSERT_GE(good.p.layers_per_group, 2u) << "the fixture needs two layers";
  auto r = report_of(good.p, c, [](plan& p) {
    auto other = [](uint32_t l) { return l == 0 ? 1u : 0u; };
    for (auto& o : p.decode.ops) {
      if (o.layer > 1 || o.layer == model::global_layer)
        continue;
      uint32_t l = other(o.layer);
      for (auto& w : o.weights)
        w = shard_on(p, o.chip, l, p.shards[w].tensor.kind);
      if (o.kind == op_kind::attention)
        for (uint32_t i = 0; i < p.kv_slices.size(); ++i)
          if (p.kv_slices[i].chip == o.chip && p.kv_slices[i].layer == l)
            o.kv = i;
      o.layer = l;
    }
  });
  EXPECT_RULES(r, "layer-order");
  EXPECT_VIOLATION(joined(r), "holds x entering layer 0 (attention), needs x "
                              "entering layer 1 (attention)");
}

// --- Memory ------------------------------------------------------------------

TEST_F(verifier, kv_slice_over_an_activation) {
  // memory-overlap: a chip's K cache of one layer moved so that it ends
  // inside a buffer the decode program writes there (its last bytes share
  // the buffer's first).
  auto r = report([](plan& p) {
    auto& kv = p.kv_slices[0];
    const auto& o = find_op(p.decode, [&](const op& o) {
      return o.chip == kv.chip && o.kind == op_kind::attention;
    });
    kv.k_offset = o.inputs[0].offset + 64 - kv.bytes_each(p.spec.head_dim);
  });
  EXPECT_RULES(r, "memory-overlap");
  EXPECT_VIOLATION(joined(r), "KV slice of layer 0 (K) and decode op");
}

TEST_F(verifier, two_live_buffers_in_one_place) {
  // memory-overlap: an op output moves onto another output of its chip
  // that is live at the same time (its readers follow it, so every input
  // still reads where its producer wrote).
  std::string what;
  auto r = report([&](plan& p) {
    auto& prog = p.decode;
    // Local outputs (sent ones live in send windows) and their lifetimes.
    struct buffer {
      uint32_t op, output;
      uint64_t begin, end;
    };
    std::vector<buffer> local;
    for (const auto& o : prog.ops)
      for (uint32_t k = 0; k < o.outputs.size(); ++k)
        if (sends_of(prog, o.id, k).empty() && o.kind != op_kind::sample &&
            o.chip < config_->chip_count())
          local.push_back({o.id, k, o.start_slot, end_slot(o)});
    for (auto& b : local)
      for (const auto& o : prog.ops)
        for (const auto& in : o.inputs)
          if (in.producer == b.op && in.producer_output == b.output)
            b.end = std::max<uint64_t>(b.end, end_slot(o));
    for (const auto& a : local)
      for (const auto& b : local) {
        auto& oa = prog.ops[a.op];
        auto& ob = prog.ops[b.op];
        if (oa.chip != ob.chip || a.op >= b.op || b.begin >= a.end ||
            a.begin >= b.end ||
            oa.outputs[a.output].offset == ob.outputs[b.output].offset)
          continue;
        uint64_t to = oa.outputs[a.output].offset;
        ob.outputs[b.output].offset = to;
        for (auto& o : prog.ops)
          for (auto& in : o.inputs)
            if (in.producer == b.op && in.producer_output == b.output)
              in.offset = to;
        what = "decode op " + std::to_string(ob.id) + " (";
        return;
      }
    throw std::runtime_error("no two local buffers live at once");
  });
  EXPECT_RULES(r, "memory-overlap");
  EXPECT_VIOLATION(joined(r), what);
}

TEST_F(verifier, kv_slice_beyond_sram) {
  // memory-bounds: a V cache placed past the end of its chip's SRAM.
  auto r = report([&](plan& p) {
    p.kv_slices[0].v_offset = config_->chip.sram_bytes - 64;
  });
  EXPECT_RULES(r, "memory-bounds");
  EXPECT_VIOLATION(joined(r), "KV slice of layer 0 (V) at SRAM [");
  EXPECT_VIOLATION(joined(r), "is beyond its");
}

// --- The token loop and prefill -------------------------------------------

TEST_F(verifier, decode_program_missing) {
  auto r = report([](plan& p) { p.decode = step_program{}; });
  EXPECT_RULES(r, "token-loop");
  EXPECT_VIOLATION(joined(r), "the decode program is missing");
}

// A second feed of micro-batch 0 (nothing reads its row table) in an idle
// slot of the sampler host, its output past the program's host memory.
void add_second_feed(plan& p, step_program& prog) {
  const auto& feed = find_op(prog, [](const op& o) {
    return o.kind == op_kind::feed && o.micro_batch == 0;
  });
  uint32_t at = idle_slot(prog, p.sampler, feed.duration_slots, end_slot(feed));
  if (at == no_id)
    throw std::runtime_error("the sampler host is never idle");
  auto& x = append_copy(prog, feed.id, at);
  x.outputs[0].offset = (prog.arenas[p.sampler].end + 63) / 64 * 64;
}

TEST_F(verifier, token_loop_with_two_feeds) {
  // The loop is one feed and one sample per micro-batch: a second feed
  // would send the sampled rows twice.
  auto r = report([](plan& p) { add_second_feed(p, p.decode); });
  EXPECT_RULES(r, "token-loop");
  EXPECT_VIOLATION(joined(r), "decode micro-batch 0 has 2 feeds and 1 samples");
}

TEST_F(verifier, token_loop_not_closed) {
  // The feed no longer sends what the sample wrote in the previous step: it
  // reads the sample's output as if written this step. The token-loop rule
  // says the loop is open; input-source says the feed reads an output
  // written after it runs. They overlap by design (the loop is the one
  // input carried from the previous step), so both fire.
  auto r = report([](plan& p) {
    find_op(p.decode, [](const op& o) { return o.kind == op_kind::feed; })
        .inputs[0]
        .carried = false;
  });
  EXPECT_RULES(r, "input-source", "token-loop");
  EXPECT_VIOLATION(joined(r), "its feed does not send the rows its sample "
                              "wrote in the previous step");
}

TEST_F(verifier, prefill_program_missing) {
  auto r = report([](plan& p) { p.prefill = step_program{}; });
  EXPECT_RULES(r, "prefill");
  EXPECT_VIOLATION(joined(r), "the prefill program is missing");
}

TEST_F(verifier, prefill_with_two_feeds) {
  auto r = report([](plan& p) { add_second_feed(p, p.prefill); });
  EXPECT_RULES(r, "prefill");
  EXPECT_VIOLATION(joined(r),
                   "prefill micro-batch 0 has 2 feeds and 1 samples");
}

} // namespace
} // namespace lockstep::planner
