// Plans on disk: byte-identical for identical inputs, decode the exact
// inverse of encode (every field of both programs), the slot tables inside,
// host endpoints, and the RocksDB plan cache.

#include "planner/plan_cache.hpp"
#include "planner/plan_codec.hpp"
#include "tests/planner/planner_fixture.hpp"

#include <filesystem>

namespace lockstep::planner {
namespace {

using test::both_programs;
using test::find_op;
using test::load;
using test::make;

TEST(planner, same_inputs_give_byte_identical_plans) {
  auto c = load("groq-64");
  auto a = make(c, "llama-3-8b", {2, 1024, {}});
  auto b = make(c, "llama-3-8b", {2, 1024, {}});
  ASSERT_FALSE(a.p.decode.ops.empty());
  ASSERT_FALSE(a.p.prefill.ops.empty());
  // Both programs are in the encoding, so equal bytes cover both; compare
  // them one by one too, so a difference names its program.
  test::with_root(encode_plan(c, a.p), [&](schema::Plan::Reader ra) {
    test::with_root(encode_plan(c, b.p), [&](schema::Plan::Reader rb) {
      auto same = [](auto x, auto y) {
        ::capnp::MallocMessageBuilder mx, my;
        mx.setRoot(x);
        my.setRoot(y);
        auto wx = ::capnp::messageToFlatArray(mx);
        auto wy = ::capnp::messageToFlatArray(my);
        return wx.asBytes() == wy.asBytes();
      };
      EXPECT_TRUE(same(ra.getDecode(), rb.getDecode()));
      EXPECT_TRUE(same(ra.getPrefill(), rb.getPrefill()));
    });
  });
  EXPECT_EQ(encode_plan(c, a.p), encode_plan(c, b.p));
  EXPECT_EQ(plan_hash(c, a.p), plan_hash(c, b.p));
  auto other = make(c, "llama-3-8b", {1, 1024, {}});
  EXPECT_NE(plan_hash(c, a.p), plan_hash(c, other.p));
}

TEST(planner, encoded_plan_carries_the_slot_table) {
  auto c = load("local-8");
  auto r = make(c, "tiny-8");
  auto bytes = encode_plan(c, r.p);
  auto hash = check_encoded_plan(bytes);
  ASSERT_TRUE(hash) << render(hash.error());
  EXPECT_EQ(*hash, plan_hash(c, r.p));
  // Each program's slot table lists exactly its transfers.
  test::with_root(bytes, [&](schema::Plan::Reader root) {
    for (auto kind : both_programs) {
      auto prog =
          kind == program_kind::decode ? root.getDecode() : root.getPrefill();
      size_t n = 0;
      for (auto l : prog.getSlotTable().getLinks())
        n += l.getTransfers().size();
      EXPECT_EQ(n, r.p.program(kind).transfers.size()) << to_string(kind);
      EXPECT_EQ(prog.getSlotTable().getSlotsPerStep(),
                r.p.program(kind).slots_per_step);
    }
  });
  EXPECT_FALSE(check_encoded_plan(bytes.substr(0, bytes.size() / 2)));
  EXPECT_FALSE(check_encoded_plan(std::string(64, '\xff')));
  EXPECT_FALSE(check_encoded_plan("abc"));
}

// Field-by-field equality of two plans, every field the plan holds.
void expect_same_operands(const std::vector<operand>& a,
                          const std::vector<operand>& b,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].offset, b[i].offset) << what << " " << i;
    EXPECT_EQ(a[i].shape, b[i].shape) << what << " " << i;
    EXPECT_EQ(a[i].transfer, b[i].transfer) << what << " " << i;
    EXPECT_EQ(a[i].producer, b[i].producer) << what << " " << i;
    EXPECT_EQ(a[i].producer_output, b[i].producer_output) << what << " " << i;
    EXPECT_EQ(a[i].carried, b[i].carried) << what << " " << i;
  }
}

void expect_same_program(const step_program& a, const step_program& b) {
  std::string tag = to_string(a.kind);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.tokens, b.tokens) << tag;
  EXPECT_EQ(a.micro_batches, b.micro_batches) << tag;
  EXPECT_EQ(a.micro_batch_sequences, b.micro_batch_sequences) << tag;
  EXPECT_EQ(a.slots_per_step, b.slots_per_step) << tag;
  EXPECT_EQ(a.period_slots, b.period_slots) << tag;
  ASSERT_EQ(a.ops.size(), b.ops.size()) << tag;
  for (size_t i = 0; i < a.ops.size(); ++i) {
    const auto& x = a.ops[i];
    const auto& y = b.ops[i];
    auto what = tag + " op " + std::to_string(i);
    EXPECT_EQ(x.id, y.id) << what;
    EXPECT_EQ(x.kind, y.kind) << what;
    EXPECT_EQ(x.chip, y.chip) << what;
    EXPECT_EQ(x.layer, y.layer) << what;
    EXPECT_EQ(x.micro_batch, y.micro_batch) << what;
    EXPECT_EQ(x.start_slot, y.start_slot) << what;
    EXPECT_EQ(x.duration_slots, y.duration_slots) << what;
    EXPECT_EQ(x.duration_ns, y.duration_ns) << what;
    EXPECT_EQ(x.after_ops, y.after_ops) << what;
    EXPECT_EQ(x.after_transfers, y.after_transfers) << what;
    expect_same_operands(x.inputs, y.inputs, what + " inputs");
    expect_same_operands(x.outputs, y.outputs, what + " outputs");
    EXPECT_EQ(x.scratch_offset, y.scratch_offset) << what;
    EXPECT_EQ(x.scratch_bytes, y.scratch_bytes) << what;
    EXPECT_EQ(x.weights, y.weights) << what;
    EXPECT_EQ(x.kv, y.kv) << what;
    EXPECT_EQ(x.vocab_bounds, y.vocab_bounds) << what;
    EXPECT_EQ(x.n_blocks, y.n_blocks) << what;
    ASSERT_EQ(x.parts.size(), y.parts.size()) << what;
    for (size_t k = 0; k < x.parts.size(); ++k) {
      EXPECT_EQ(x.parts[k].chip, y.parts[k].chip) << what;
      EXPECT_EQ(x.parts[k].first_block, y.parts[k].first_block) << what;
      EXPECT_EQ(x.parts[k].end_block, y.parts[k].end_block) << what;
    }
    EXPECT_EQ(x.nodes, y.nodes) << what;
    EXPECT_EQ(x.out_first, y.out_first) << what;
    EXPECT_EQ(x.out_end, y.out_end) << what;
  }
  ASSERT_EQ(a.transfers.size(), b.transfers.size()) << tag;
  for (size_t i = 0; i < a.transfers.size(); ++i) {
    const auto& x = a.transfers[i];
    const auto& y = b.transfers[i];
    auto what = tag + " transfer " + std::to_string(i);
    EXPECT_EQ(x.id, y.id) << what;
    EXPECT_EQ(x.link, y.link) << what;
    EXPECT_EQ(x.src, y.src) << what;
    EXPECT_EQ(x.dst, y.dst) << what;
    EXPECT_EQ(x.start_slot, y.start_slot) << what;
    EXPECT_EQ(x.duration_slots, y.duration_slots) << what;
    EXPECT_EQ(x.payload_bytes, y.payload_bytes) << what;
    EXPECT_EQ(x.bytes, y.bytes) << what;
    EXPECT_EQ(x.src_offset, y.src_offset) << what;
    EXPECT_EQ(x.dst_offsets, y.dst_offsets) << what;
    EXPECT_EQ(x.after_op, y.after_op) << what;
    EXPECT_EQ(x.src_output, y.src_output) << what;
    EXPECT_EQ(x.after_transfer, y.after_transfer) << what;
    EXPECT_EQ(x.consumer_op, y.consumer_op) << what;
    EXPECT_EQ(x.consumer_input, y.consumer_input) << what;
  }
  ASSERT_EQ(a.arenas.size(), b.arenas.size()) << tag;
  for (size_t n = 0; n < a.arenas.size(); ++n) {
    auto what = tag + " arenas of node " + std::to_string(n);
    EXPECT_EQ(a.arenas[n].send_base, b.arenas[n].send_base) << what;
    EXPECT_EQ(a.arenas[n].send_bytes, b.arenas[n].send_bytes) << what;
    EXPECT_EQ(a.arenas[n].recv_base, b.arenas[n].recv_base) << what;
    EXPECT_EQ(a.arenas[n].recv_bytes, b.arenas[n].recv_bytes) << what;
    EXPECT_EQ(a.arenas[n].end, b.arenas[n].end) << what;
  }
}

void expect_same_plan(const plan& a, const plan& b) {
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.cluster, b.cluster);
  EXPECT_EQ(a.spec, b.spec);
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.tp_degree, b.tp_degree);
  EXPECT_EQ(a.layers_per_group, b.layers_per_group);
  EXPECT_EQ(a.aligned_splits, b.aligned_splits);
  EXPECT_EQ(a.slot_ns, b.slot_ns);
  EXPECT_EQ(a.failed_chips, b.failed_chips);
  EXPECT_EQ(a.incremental, b.incremental);
  EXPECT_EQ(a.spares, b.spares);
  EXPECT_EQ(a.chips_used, b.chips_used);
  EXPECT_EQ(a.group_chips, b.group_chips);
  EXPECT_EQ(a.embed_chips, b.embed_chips);
  EXPECT_EQ(a.head_chips, b.head_chips);
  EXPECT_EQ(a.sampler, b.sampler);
  ASSERT_EQ(a.shards.size(), b.shards.size());
  for (size_t i = 0; i < a.shards.size(); ++i) {
    const auto& x = a.shards[i];
    const auto& y = b.shards[i];
    EXPECT_EQ(x.chip, y.chip) << "shard " << i;
    EXPECT_EQ(x.tensor, y.tensor) << "shard " << i;
    EXPECT_EQ(x.range, y.range) << "shard " << i;
    EXPECT_EQ(x.bytes, y.bytes) << "shard " << i;
    EXPECT_EQ(x.offset, y.offset) << "shard " << i;
    EXPECT_EQ(x.scales_offset, y.scales_offset) << "shard " << i;
  }
  ASSERT_EQ(a.kv_slices.size(), b.kv_slices.size());
  for (size_t i = 0; i < a.kv_slices.size(); ++i) {
    const auto& x = a.kv_slices[i];
    const auto& y = b.kv_slices[i];
    EXPECT_EQ(x.chip, y.chip) << "KV slice " << i;
    EXPECT_EQ(x.layer, y.layer) << "KV slice " << i;
    EXPECT_EQ(x.kv_head_begin, y.kv_head_begin) << "KV slice " << i;
    EXPECT_EQ(x.kv_head_end, y.kv_head_end) << "KV slice " << i;
    EXPECT_EQ(x.sequences, y.sequences) << "KV slice " << i;
    EXPECT_EQ(x.positions, y.positions) << "KV slice " << i;
    EXPECT_EQ(x.k_offset, y.k_offset) << "KV slice " << i;
    EXPECT_EQ(x.v_offset, y.v_offset) << "KV slice " << i;
  }
  expect_same_program(a.decode, b.decode);
  expect_same_program(a.prefill, b.prefill);
  ASSERT_EQ(a.usage.size(), b.usage.size());
  for (size_t n = 0; n < a.usage.size(); ++n) {
    EXPECT_EQ(a.usage[n].weight_bytes, b.usage[n].weight_bytes) << n;
    EXPECT_EQ(a.usage[n].kv_bytes, b.usage[n].kv_bytes) << n;
    EXPECT_EQ(a.usage[n].decode_bytes, b.usage[n].decode_bytes) << n;
    EXPECT_EQ(a.usage[n].prefill_bytes, b.usage[n].prefill_bytes) << n;
  }
  const auto& x = a.predicted;
  const auto& y = b.predicted;
  EXPECT_EQ(x.token_latency_us, y.token_latency_us);
  EXPECT_EQ(x.tokens_per_s_per_user, y.tokens_per_s_per_user);
  EXPECT_EQ(x.aggregate_tokens_per_s, y.aggregate_tokens_per_s);
  EXPECT_EQ(x.ttft_ms, y.ttft_ms);
  EXPECT_EQ(x.ttft_prompt_tokens, y.ttft_prompt_tokens);
  EXPECT_EQ(x.lower_bound_token_latency_us, y.lower_bound_token_latency_us);
  EXPECT_EQ(x.link_utilisation, y.link_utilisation);
  EXPECT_EQ(x.sram_utilisation, y.sram_utilisation);
}

TEST(planner, decode_is_the_inverse_of_encode) {
  for (auto [config, model] :
       {std::pair{"groq-64", "llama-3-8b"}, std::pair{"local-8", "tiny-8"}}) {
    SCOPED_TRACE(std::string{model} + " on " + config);
    auto c = load(config);
    auto r = make(c, model, {1, 512, {}});
    auto bytes = encode_plan(c, r.p);
    auto back = decode_plan(c, bytes);
    ASSERT_TRUE(back) << render(back.error());
    EXPECT_EQ(encode_plan(c, *back), bytes);
    expect_same_plan(r.p, *back);
    EXPECT_TRUE(verify_plan(*back, c).ok());
  }
  // Decoding against another cluster fails cleanly (its chips or links).
  auto c = load("groq-64");
  auto bytes = encode_plan(c, make(c, "llama-3-8b", {1, 1024, {}}).p);
  auto other = load("local-8");
  EXPECT_FALSE(decode_plan(other, bytes));
}

TEST(planner, host_endpoints_round_trip_through_the_codec_and_verifier) {
  // The token loop runs through the sampler host's endpoint: the feed's row
  // table leaves it and the logits arrive there, over host links, in both
  // programs; all of that encodes and decodes as it was.
  auto c = load("local-8");
  auto r = make(c, "tiny-8");
  const auto& p = r.p;
  ASSERT_TRUE(c.is_host_node(p.sampler));
  EXPECT_EQ(p.sampler, c.host_node(0));
  auto bytes = encode_plan(c, p);
  auto back = decode_plan(c, bytes);
  ASSERT_TRUE(back) << render(back.error());
  EXPECT_EQ(encode_plan(c, *back), bytes);
  EXPECT_EQ(back->sampler, p.sampler);
  for (auto kind : both_programs) {
    const auto& prog = p.program(kind);
    size_t in = 0, out = 0;
    for (const auto& t : prog.transfers) {
      if (t.dst != p.sampler && t.src != p.sampler)
        continue;
      (t.dst == p.sampler ? in : out) += 1;
      EXPECT_EQ(c.links[t.link / 2].profile, c.host_link);
      const auto& u = back->program(kind).transfers[t.id];
      EXPECT_EQ(u.src, t.src);
      EXPECT_EQ(u.dst, t.dst);
      EXPECT_EQ(u.link, t.link);
    }
    EXPECT_GE(in, p.head_chips.size()) << to_string(kind) << ": the logits";
    EXPECT_GE(out, 1u) << to_string(kind) << ": the row table";
  }
  // A transfer to the host that nobody reads: the verifier names it.
  auto q = *back;
  auto& prog = q.decode;
  auto last = std::find_if(prog.transfers.rbegin(), prog.transfers.rend(),
                           [&](auto& t) { return t.dst == q.sampler; });
  ASSERT_NE(last, prog.transfers.rend());
  transfer x = *last;
  x.id = static_cast<uint32_t>(prog.transfers.size());
  x.consumer_op = no_id;
  prog.transfers.push_back(x);
  auto again = decode_plan(c, encode_plan(c, q));
  ASSERT_TRUE(again) << render(again.error());
  EXPECT_EQ(again->decode.transfers.back().dst, q.sampler);
  EXPECT_EQ(again->decode.transfers.back().consumer_op, no_id);
  auto v = verify_plan(*again, c);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.rules(), std::set<std::string>{"ids"});
  // The ids rule names the transfer by id only (not its link): the former
  // test expected "h0.c..->h0.host ... nobody reads it".
  EXPECT_NE(
      v.violations.front().find("decode transfer " + std::to_string(x.id)),
      std::string::npos)
      << v.violations.front();
  // A reader that does not read it: named with its link.
  prog.transfers.back().consumer_op =
      find_op(prog, [](const op& o) { return o.kind == op_kind::sample; }).id;
  auto w = verify_plan(q, c);
  ASSERT_TRUE(w.rules().contains("consumer"));
  bool named = false;
  for (const auto& what : w.violations)
    named |=
        what.starts_with("consumer: decode transfer " + std::to_string(x.id)) &&
        what.find("->h0.host") != std::string::npos;
  EXPECT_TRUE(named) << w.violations.front();
  // Chip work runs on chips only: a gather on a host endpoint is named as
  // such. (Decoding it no longer fails: feed and sample ops do live on
  // host endpoints. Where only chips make sense — a combine's parts —
  // decoding a host endpoint fails cleanly.)
  auto h = *back;
  find_op(h.decode, [](const op& o) {
    return o.kind == op_kind::gather;
  }).chip = h.sampler;
  auto hv = verify_plan(h, c);
  ASSERT_FALSE(hv.ok());
  EXPECT_NE(hv.violations.front().find("on h0.host"), std::string::npos)
      << hv.violations.front();
  EXPECT_NE(hv.violations.front().find("a chip op on a host endpoint"),
            std::string::npos)
      << hv.violations.front();
  auto part = *back;
  find_op(part.decode, [](const op& o) { return o.kind == op_kind::combine; })
      .parts.front()
      .chip = part.sampler;
  auto bad = decode_plan(c, encode_plan(c, part));
  ASSERT_FALSE(bad);
  EXPECT_NE(render(bad.error()).find("h0.host is a host endpoint, not a chip"),
            std::string::npos)
      << render(bad.error());
}

TEST(planner, plan_cache_round_trips_through_rocksdb) {
  char dir[] = "/tmp/lockstep-plan-cache-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::filesystem::path path = std::string{dir} + "/db";
  {
    auto db = storage::store::open(path, {.create_if_missing = true});
    ASSERT_TRUE(db) << render(db.error());
    plan_cache cache{**db};
    auto c = load("local-8");
    auto r = make(c, "tiny-8");
    auto hash = plan_hash(c, r.p);
    EXPECT_FALSE(*cache.get(c, hash)); // empty
    ASSERT_FALSE(cache.put(c, r.p));
    auto hit = cache.get(c, hash);
    ASSERT_TRUE(hit && *hit);
    EXPECT_EQ(encode_plan(c, **hit), encode_plan(c, r.p));
    expect_same_plan(r.p, **hit); // both programs
    EXPECT_EQ(hash, input_hash(c, r.p.spec, 1, r.p.spec.max_context, {}));
    // A corrupt entry is an error, not a plan.
    ASSERT_FALSE((*db)->put(storage::column::plans, "plan/" + hash, "junk!!!"));
    EXPECT_FALSE(cache.get(c, hash));
  }
  std::filesystem::remove_all(dir);
}

} // namespace
} // namespace lockstep::planner
