// The verifier catches each kind of violation in hand-built bad plans: each
// test takes a verified plan, breaks one rule, and expects the verifier to
// name it (as the only rule that fires where the rules do not overlap).
// Here: the schedule and plan-level rules, and the period.
// verifier_program_test.cpp: the program's dataflow, memory, token loop and
// prefill; verifier_two_level_test.cpp: two-level reductions.

#include "planner/plan_codec.hpp"
#include "tests/planner/verifier_fixture.hpp"

namespace lockstep::planner {
namespace {

using test::end_slot;
using test::find_op;
using test::joined;
using test::load;
using test::lone_transfer;
using test::make;
using test::report_of;
using test::verifier;

TEST_F(verifier, accepts_the_good_plan) {
  ASSERT_GT(good_->tp_degree, 1u) << "the fixture needs reduction splits";
  EXPECT_EQ(violations([](plan&) {}), "");
}

// --- The schedule ------------------------------------------------------------

TEST_F(verifier, link_carrying_two_transfers_in_one_slot) {
  auto r = report([](plan& p) {
    // Two transfers onto one link: move the second onto the first's link
    // and slot (ends adjusted to stay consistent).
    auto& ts = p.decode.transfers;
    auto& a = ts[0];
    for (auto& b : ts)
      if (b.id != a.id && b.src == a.src && b.link != a.link) {
        b.link = a.link;
        b.dst = a.dst;
        b.start_slot = a.start_slot;
        return;
      }
    for (auto& b : ts)
      if (b.id != a.id) {
        b.link = a.link;
        b.src = a.src;
        b.dst = a.dst;
        b.start_slot = a.start_slot;
        return;
      }
  });
  EXPECT_VIOLATION(joined(r), "carries decode transfer");
  EXPECT_TRUE(r.rules().contains("link-conflict")) << joined(r);
}

TEST_F(verifier, chip_running_two_ops_at_once) {
  auto r = report([](plan& p) {
    for (auto& a : p.decode.ops)
      for (auto& b : p.decode.ops)
        if (a.id < b.id && a.chip == b.chip) {
          b.start_slot = a.start_slot;
          return;
        }
  });
  EXPECT_VIOLATION(joined(r), "at once");
  EXPECT_TRUE(r.rules().contains("chip-conflict")) << joined(r);
}

TEST_F(verifier, op_starting_before_its_input_arrives) {
  auto r = report([](plan& p) {
    for (auto& o : p.decode.ops)
      if (!o.after_transfers.empty()) {
        o.start_slot = p.decode.transfers[o.after_transfers[0]].start_slot;
        return;
      }
  });
  EXPECT_VIOLATION(joined(r), "starts before its input");
  EXPECT_TRUE(r.rules().contains("dependency")) << joined(r);
}

TEST_F(verifier, transfer_faster_than_the_link) {
  auto r = report([](plan& p) {
    auto& t = p.decode.transfers[0];
    t.payload_bytes = 1u << 30;
    t.bytes = transport::framed_bytes(t.payload_bytes);
  });
  EXPECT_VIOLATION(joined(r), "need");
  EXPECT_TRUE(r.rules().contains("link-capacity")) << joined(r);
}

TEST_F(verifier, transfer_size_not_the_framed_payload) {
  uint32_t id = no_id;
  auto r = report([&](plan& p) {
    auto& t = lone_transfer(p.decode);
    id = t.id;
    t.bytes -= 8;
  });
  EXPECT_RULES(r, "transfer-size");
  EXPECT_VIOLATION(joined(r), "decode transfer " + std::to_string(id) + " ");
}

TEST_F(verifier, sram_exceeded) {
  // What usage claims of the program's memory is over SRAM. (Usage of
  // weights and KV must match the shards and slices: the `usage` rule.)
  auto r = report([&](plan& p) {
    p.usage[p.chips_used[0]].decode_bytes += config_->chip.sram_bytes;
  });
  EXPECT_VIOLATION(joined(r), "bytes of SRAM");
  EXPECT_RULES(r, "capacity");
}

TEST_F(verifier, usage_not_what_the_shards_hold) {
  auto r = report([](plan& p) { p.usage[p.chips_used[0]].kv_bytes += 64; });
  EXPECT_RULES(r, "usage");
}

TEST_F(verifier, work_on_a_spare_chip) {
  auto v = violations([&](plan& p) {
    find_op(p.decode, [](const op& o) {
      return o.kind == op_kind::attention;
    }).chip = config_->spares[0];
  });
  EXPECT_VIOLATION(v, "spare or failed chip");
}

TEST_F(verifier, combine_in_a_non_canonical_order) {
  auto r = report([](plan& p) {
    for (auto& o : p.decode.ops)
      if (o.kind == op_kind::combine) {
        // Split the first part's maximal node into its two halves: the same
        // sum, a different (non-canonical) addition order.
        for (size_t i = 0; i < o.nodes.size(); ++i)
          if (o.nodes[i].count > 1) {
            auto n = o.nodes[i];
            o.nodes[i] = {n.first, n.count / 2};
            o.nodes.insert(o.nodes.begin() + i + 1,
                           {n.first + n.count / 2, n.count / 2});
            return;
          }
      }
  });
  EXPECT_VIOLATION(joined(r), "not the canonical tree's maximal node");
  EXPECT_RULES(r, "combine-order");
}

TEST_F(verifier, reduction_split_off_block_boundaries) {
  auto r = report([](plan& p) {
    for (auto& o : p.decode.ops)
      if (o.kind == op_kind::combine) {
        o.parts[1].first_block += 1; // a gap: blocks lost
        return;
      }
  });
  EXPECT_VIOLATION(joined(r), "do not tile blocks");
  EXPECT_RULES(r, "combine-order");
}

TEST_F(verifier, overlapping_receive_windows) {
  auto r = report([](plan& p) {
    for (auto& a : p.decode.transfers)
      for (auto& b : p.decode.transfers)
        if (a.id < b.id && a.dst == b.dst) {
          b.dst_offsets[0] = a.dst_offsets[0];
          return;
        }
  });
  EXPECT_VIOLATION(joined(r), "overlap");
  EXPECT_TRUE(r.rules().contains("windows")) << joined(r);
}

TEST_F(verifier, buffer_overwritten_before_its_consumer_ran) {
  auto v = violations([](plan& p) {
    // One buffer, rewritten every step, with steps starting every slot (the
    // old test shortened the step; the rule now counts periods). The
    // period rule fires as well: decode steps cannot overlap.
    auto& t = p.decode.transfers[0];
    t.dst_offsets.resize(1);
    p.decode.period_slots = 1;
  });
  EXPECT_VIOLATION(v, "before its consumer");
  EXPECT_VIOLATION(v, "buffer-reuse: decode transfer 0 ");
}

TEST_F(verifier, weight_not_placed) {
  // (Erasing the shard renumbers the later ones, so ops' weight indices
  // point at other tensors too: op-shape and more fire besides coverage.)
  auto v = violations([](plan& p) {
    auto it = std::find_if(p.shards.begin(), p.shards.end(), [](auto& s) {
      return s.tensor.kind == model::tensor_kind::w_up;
    });
    p.usage[it->chip].weight_bytes -= it->bytes;
    p.shards.erase(it);
  });
  EXPECT_VIOLATION(v, "l0.w_up: shards cover");
}

TEST_F(verifier, broken_multi_hop_route) {
  auto c = load("groq-64");
  auto r = make(c, "llama-3-8b", {1, 1024, {}});
  ASSERT_TRUE(r.verdict.ok());
  auto& ts = r.p.decode.transfers;
  auto hop = std::find_if(ts.begin(), ts.end(),
                          [](auto& t) { return t.after_transfer != no_id; });
  ASSERT_NE(hop, ts.end()) << "the fixture needs a 2-hop route";
  // Claim the second hop continues some other transfer.
  for (const auto& t : ts)
    if (t.dst != hop->src) {
      hop->after_transfer = t.id;
      break;
    }
  auto report = report_of(r.p, c, [](plan&) {});
  ASSERT_FALSE(report.ok());
  EXPECT_VIOLATION(joined(report), "route broken");
  EXPECT_RULES(report, "route");
}

TEST_F(verifier, op_ending_after_the_step) {
  // The step (and with it the decode period) one slot shorter than the
  // program: the last sample ends after it.
  auto r = report([](plan& p) {
    p.decode.slots_per_step -= 1;
    p.decode.period_slots -= 1;
  });
  EXPECT_RULES(r, "step");
  EXPECT_VIOLATION(joined(r), "(sample on h0.host, slots ");
  EXPECT_VIOLATION(joined(r), "ends after slot");
}

TEST_F(verifier, op_ids_not_their_indices) {
  auto r = report([](plan& p) { p.decode.ops[5].id = 6; });
  EXPECT_RULES(r, "ids");
  EXPECT_VIOLATION(joined(r), "decode op at index 5 has id 6");
}

TEST_F(verifier, chip_in_use_listed_as_a_spare) {
  auto r = report([](plan& p) { p.spares.push_back(p.chips_used[0]); });
  EXPECT_RULES(r, "spares");
  EXPECT_VIOLATION(joined(r), "is listed as a spare but is not one");
}

// --- The period --------------------------------------------------------------

TEST_F(verifier, decode_steps_overlapping) {
  // Decode steps wait for the token loop: their period is the step. One
  // slot less would start the next token before this one is sampled.
  auto r = report([](plan& p) { p.decode.period_slots -= 1; });
  EXPECT_RULES(r, "period");
  EXPECT_VIOLATION(joined(r), "decode program: decode steps depend on the "
                              "previous token");
}

TEST_F(verifier, decode_period_longer_than_the_step) {
  auto r = report(
      [](plan& p) { p.decode.period_slots = p.decode.slots_per_step + 1; });
  EXPECT_RULES(r, "period");
  EXPECT_VIOLATION(joined(r), "decode program: period of");
}

TEST_F(verifier, prefill_period_too_short) {
  // One slot less than the planner's (smallest) period: a chip would run
  // ops of two chunks at once. (Shorter still, buffers of two chunks meet
  // too: memory-overlap.)
  ASSERT_LT(good_->prefill.period_slots, good_->prefill.slots_per_step);
  auto r = report([](plan& p) { p.prefill.period_slots -= 1; });
  EXPECT_RULES(r, "period");
  EXPECT_VIOLATION(joined(r), "prefill program: h");
  EXPECT_VIOLATION(joined(r), "runs two ops at once when steps start every");
}

// --- Hostile integers -----------------------------------------------------
//
// Plans are untrusted input (a cached plan is decoded and verified before
// use), so every field of planner/plan.capnp can hold any integer. These
// once hung, passed or crashed the verifier.

// A combine over 2^31+ blocks (the tree span once wrapped to 0 and the
// verifier looped forever).
TEST_F(verifier, combine_of_over_2_to_the_31_blocks_is_refused) {
  auto r = report([](plan& p) {
    find_op(p.decode, [](const op& o) {
      return o.kind == op_kind::combine;
    }).n_blocks = 0x80000001u;
  });
  EXPECT_TRUE(r.rules().contains("combine-order")) << joined(r);
}

// A transfer whose end passes 2^32 (32-bit end slots once wrapped to a
// small slot and the plan verified).
TEST_F(verifier, transfer_ending_past_2_to_the_32_is_refused) {
  auto r = report([](plan& p) {
    auto& t = p.decode.transfers[5];
    t.duration_slots = static_cast<uint32_t>(0x100000000ull - t.start_slot + 1);
  });
  EXPECT_TRUE(r.rules().contains("step")) << joined(r);
}

// A model spec with zero kv heads or head_dim (the verifier divided by
// them): decoding refuses it, and so does verifying a plan built in memory.
TEST_F(verifier, plan_with_zero_kv_heads_is_refused) {
  for (auto field :
       {&model::model_spec::n_kv_heads, &model::model_spec::head_dim}) {
    plan p = *good_;
    p.spec.*field = 0;
    auto back = decode_plan(*config_, encode_plan(*config_, p));
    ASSERT_FALSE(back);
    EXPECT_NE(detail_of(back.error()).find("model spec"), std::string::npos)
        << detail_of(back.error());
    EXPECT_EQ(verify_plan(p, *config_).rules(), std::set<std::string>{"ids"});
  }
}

} // namespace
} // namespace lockstep::planner
