// A plan is the complete program of the machine: every input of every
// op is produced earlier on its node or arrives by a transfer, attention
// finds its KV slice, the token loop closes through the sampler host, a
// prefill program exists; micro-batches cover the batch.

#include "tests/planner/planner_fixture.hpp"
#include "transport/payload_frame.hpp"

namespace lockstep::planner {
namespace {

using test::both_programs;
using test::end_slot;
using test::find_op;
using test::load;
using test::make;

// --- Every chip's program is complete --------------------------------------

// Collects what is wrong with a program (the first few, not thousands of
// failed EXPECTs).
struct problems {
  std::vector<std::string> list;
  size_t count = 0;
  void add(const std::string& what) {
    if (++count <= 8)
      list.push_back(what);
  }
  std::string text() const {
    std::string out = std::to_string(count) + " problems:\n";
    for (const auto& s : list)
      out += "  " + s + "\n";
    return out;
  }
};

// Checked here from the plan alone (not with the verifier): every input of
// every op is written earlier — by an op of the same node that ends before
// it starts, or by a transfer that has arrived at its node — where the op
// reads it; every transfer carries an output written before it starts;
// every attention op has its chip's KV slice of its kv heads; the decode
// token loop closes through the sampler host; the prefill program exists.
void expect_complete(const cluster_config& c, const plan& p,
                     const step_program& prog) {
  std::string tag = to_string(prog.kind);
  problems bad;
  auto name = [&](const op& o) {
    return tag + " op " + std::to_string(o.id) + " (" + to_string(o.kind) + ")";
  };
  for (const auto& o : prog.ops) {
    for (size_t i = 0; i < o.inputs.size(); ++i) {
      const auto& in = o.inputs[i];
      auto what = name(o) + " input " + std::to_string(i) + ": ";
      if ((in.transfer == no_id) == (in.producer == no_id)) {
        bad.add(what + "not exactly one source");
        continue;
      }
      if (in.transfer != no_id) {
        if (in.transfer >= prog.transfers.size()) {
          bad.add(what + "no such transfer");
          continue;
        }
        const auto& t = prog.transfers[in.transfer];
        if (t.dst != o.chip || t.consumer_op != o.id || t.consumer_input != i)
          bad.add(what + "its transfer is not delivered to it");
        if (end_slot(t) > o.start_slot)
          bad.add(what + "its transfer arrives after it starts");
        if (in.bytes() != t.payload_bytes)
          bad.add(what + "its transfer carries another size");
        if (t.dst_offsets.empty() ||
            in.offset != prog.arenas[t.dst].recv_base + t.dst_offsets[0] +
                             transport::frame_overhead_bytes)
          bad.add(what + "not read where its transfer lands");
        continue;
      }
      if (in.producer >= prog.ops.size()) {
        bad.add(what + "no such producer");
        continue;
      }
      const auto& src = prog.ops[in.producer];
      if (src.chip != o.chip || in.producer_output >= src.outputs.size()) {
        bad.add(what + "its producer is not an output on its node");
        continue;
      }
      const auto& out = src.outputs[in.producer_output];
      if (out.offset != in.offset || out.shape != in.shape)
        bad.add(what + "not read where and as its producer wrote it");
      if (in.carried) {
        // Only the token loop reaches into the previous step.
        if (prog.kind != program_kind::decode || o.kind != op_kind::feed ||
            src.kind != op_kind::sample || src.micro_batch != o.micro_batch)
          bad.add(what + "carried, but not the token loop");
      } else if (end_slot(src) > o.start_slot) {
        bad.add(what + "its producer ends after it starts");
      }
    }
  }
  for (const auto& t : prog.transfers) {
    auto what = tag + " transfer " + std::to_string(t.id) + ": ";
    if (t.after_op >= prog.ops.size()) {
      bad.add(what + "no producer");
      continue;
    }
    const auto& src = prog.ops[t.after_op];
    if (src.chip != t.src || end_slot(src) > t.start_slot ||
        t.src_output >= src.outputs.size() ||
        src.outputs[t.src_output].bytes() != t.payload_bytes)
      bad.add(what + "does not carry an output its source wrote before");
    if (t.consumer_op >= prog.ops.size())
      bad.add(what + "nobody reads it");
  }
  // KV slices: on the attention op's chip, its layer, the kv heads of its
  // query heads (GQA: n_heads / n_kv_heads query heads share one).
  const auto& s = p.spec;
  uint32_t group = s.n_heads / s.n_kv_heads;
  size_t attention = 0;
  for (const auto& o : prog.ops) {
    if (o.kind != op_kind::attention)
      continue;
    ++attention;
    const shard* wq = nullptr;
    for (auto w : o.weights)
      if (w < p.shards.size() &&
          p.shards[w].tensor.kind == model::tensor_kind::wq)
        wq = &p.shards[w];
    if (wq == nullptr || o.kv >= p.kv_slices.size()) {
      bad.add(name(o) + ": no wq shard or no KV slice");
      continue;
    }
    const auto& kv = p.kv_slices[o.kv];
    uint32_t h0 = wq->range.row_begin / s.head_dim;
    uint32_t h1 = wq->range.row_end / s.head_dim;
    if (kv.chip != o.chip || wq->chip != o.chip || kv.layer != o.layer ||
        kv.kv_head_begin != h0 / group ||
        kv.kv_head_end != (h1 + group - 1) / group || kv.sequences != p.batch ||
        kv.positions != p.context)
      bad.add(name(o) + ": its KV slice is not its chip's of heads [" +
              std::to_string(h0) + ", " + std::to_string(h1) + ")");
  }
  if (attention == 0)
    bad.add(tag + ": no attention ops");
  // The token loop (decode) and the prefill step's shape.
  if (prog.kind == program_kind::prefill) {
    if (prog.ops.empty())
      bad.add("no prefill program");
    if (prog.tokens < 1 || prog.period_slots < 1 ||
        prog.period_slots > prog.slots_per_step)
      bad.add("prefill: " + std::to_string(prog.tokens) + " tokens, period " +
              std::to_string(prog.period_slots) + " of a step of " +
              std::to_string(prog.slots_per_step));
    if (prog.micro_batches != 1 || prog.sequences(0) != 1)
      bad.add("prefill: not one sequence per step");
  } else if (prog.period_slots != prog.slots_per_step || prog.tokens != 1) {
    bad.add("decode: a period other than its length, or not one token");
  }
  for (uint32_t mb = 0; mb < prog.micro_batches; ++mb) {
    std::vector<const op*> feeds, samples;
    for (const auto& o : prog.ops)
      if (o.micro_batch == mb && o.kind == op_kind::feed)
        feeds.push_back(&o);
      else if (o.micro_batch == mb && o.kind == op_kind::sample)
        samples.push_back(&o);
    auto what = tag + " micro-batch " + std::to_string(mb) + ": ";
    if (feeds.size() != 1 || samples.size() != 1) {
      bad.add(what + "not one feed and one sample");
      continue;
    }
    const auto& feed = *feeds[0];
    const auto& sample = *samples[0];
    if (feed.chip != p.sampler || sample.chip != p.sampler)
      bad.add(what + "feed or sample away from the sampler host");
    if (!c.is_host_node(p.sampler))
      bad.add(what + "the sampler is not a host endpoint");
    bool loop = feed.inputs.size() == 1 && feed.inputs[0].carried &&
                feed.inputs[0].producer == sample.id;
    if (prog.kind == program_kind::decode ? !loop : !feed.inputs.empty())
      bad.add(what + (prog.kind == program_kind::decode
                          ? "the feed does not send what the sample wrote"
                          : "a prefill feed reads something"));
    if (sample.outputs.size() != 1 ||
        sample.outputs[0].shape.rows != prog.sequences(mb) ||
        !sample.outputs[0].shape.row_table)
      bad.add(what + "the sample does not write one row per sequence");
  }
  EXPECT_EQ(bad.count, 0u) << c.name << ": " << bad.text();
}

TEST(planner, every_chips_program_is_complete) {
  for (auto [config, model] :
       {std::pair{"local-64", "tiny-64"}, std::pair{"local-512", "tiny-512"}}) {
    auto c = load(config);
    auto r = make(c, model);
    ASSERT_TRUE(r.verdict.ok()) << r.verdict.violations.front();
    for (auto kind : both_programs)
      expect_complete(c, r.p, r.p.program(kind));
    EXPECT_GE(r.p.prefill.tokens, 1u);
    EXPECT_LE(r.p.prefill.period_slots, r.p.prefill.slots_per_step);
  }
}

// Chips that share a machine's cores run micro-batches one after the other
// anyway, and each micro-batch is another pass of every op and transfer:
// there the batch runs as one pass when the cores get through it sooner,
// and its aggregate rate is what the cores allow.
TEST(planner, chips_sharing_cores_run_the_batch_as_one_pass) {
  auto own = load("local-64");
  own.machine_cores = 0;
  auto pipelined = make(own, "tiny-64", {3, 256, {}});
  ASSERT_TRUE(pipelined.verdict.ok());
  ASSERT_EQ(pipelined.p.decode.micro_batches, 3u);
  auto shared = own;
  shared.machine_cores = 2;
  auto r = make(shared, "tiny-64", {3, 256, {}});
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.violations.front();
  EXPECT_EQ(r.p.decode.micro_batches, 1u);
  EXPECT_EQ(r.p.decode.rows(0), 3u);
  // One pass has a third of the ops: a third of the per-op overhead.
  EXPECT_LT(3 * r.p.decode.ops.size(), pipelined.p.decode.ops.size() + 10);
  for (auto kind : both_programs)
    expect_complete(shared, r.p, r.p.program(kind));
}

TEST(planner, batch_of_three_splits_into_micro_batches_covering_it) {
  // Three sequences of the full 1024 positions do not fit local-64's SRAM
  // (each chip keeps a KV head of every sequence); 256 positions do.
  auto c = load("local-64");
  auto r = make(c, "tiny-64", {3, 256, {}});
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.violations.front();
  const auto& d = r.p.decode;
  ASSERT_GT(d.micro_batches, 1u) << "the fixture needs pipelined micro-batches";
  ASSERT_EQ(d.micro_batch_sequences.size(), d.micro_batches + 1);
  // Explicit, contiguous sequence ranges tiling [0, 3), none empty.
  EXPECT_EQ(d.micro_batch_sequences.front(), 0u);
  EXPECT_EQ(d.micro_batch_sequences.back(), 3u);
  for (uint32_t mb = 0; mb < d.micro_batches; ++mb)
    EXPECT_GE(d.sequences(mb), 1u) << mb;
  for (uint32_t mb = 0; mb < d.micro_batches; ++mb) {
    const auto& feed = find_op(d, [&](const op& o) {
      return o.kind == op_kind::feed && o.micro_batch == mb;
    });
    ASSERT_EQ(feed.outputs.size(), 1u);
    EXPECT_EQ(feed.outputs[0].shape.rows, d.rows(mb)) << mb;
  }
  for (const auto& kv : r.p.kv_slices)
    EXPECT_EQ(kv.sequences, 3u);
  // Prefill stays one sequence a step.
  EXPECT_EQ(r.p.prefill.micro_batches, 1u);
  EXPECT_EQ(r.p.prefill.sequences(0), 1u);
  for (auto kind : both_programs)
    expect_complete(c, r.p, r.p.program(kind));
}

} // namespace
} // namespace lockstep::planner
