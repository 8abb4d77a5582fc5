#include "planner/plan_codec.hpp"

#include "common/digest.hpp"
#include "model/block_rule.hpp"
#include "model/spec_json.hpp"
#include "planner/plan.capnp.h"
#include "planner/topology.hpp"
#include "transport/slot_table.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <map>
#include <set>

namespace lockstep::planner {

namespace {

void set_chip(transport::schema::ChipId::Builder b, transport::chip_ref r) {
  b.setHost(r.host);
  b.setChip(r.chip);
}

} // namespace

std::string input_hash(const cluster_config& config,
                       const model::model_spec& spec, uint32_t batch,
                       uint32_t context, std::vector<uint32_t> failed,
                       bool incremental) {
  std::sort(failed.begin(), failed.end());
  std::string in = model::to_json(spec).dump() + "\n" + canonical_form(config) +
                   "batch " + std::to_string(batch) + "\ncontext " +
                   std::to_string(context) + "\nfailed";
  for (auto f : failed)
    in += " " + std::to_string(f);
  in += incremental ? " (re-planned)" : "";
  in += "\nplanner " + std::to_string(planner_version) + "\nrule " +
        std::to_string(model::determinism_rule_version) + "\n";
  sha256 h;
  h.update(std::as_bytes(std::span{in.data(), in.size()}));
  return h.hex_digest();
}

std::string plan_hash(const cluster_config& config, const plan& p) {
  return input_hash(config, p.spec, p.batch, p.context, p.failed_chips,
                    p.incremental);
}

namespace {

void put_shape(schema::BufferShape::Builder b, const buffer_shape& s) {
  b.setRows(s.rows);
  b.setColFirst(s.col_first);
  b.setCols(s.cols);
  b.setPieces(s.pieces);
  b.setRowTable(s.row_table);
}

void put_operands(::capnp::List<schema::Operand>::Builder list,
                  const std::vector<operand>& in) {
  for (size_t k = 0; k < in.size(); ++k) {
    auto b = list[k];
    b.setOffset(in[k].offset);
    put_shape(b.initShape(), in[k].shape);
    b.setTransfer(in[k].transfer);
    b.setProducer(in[k].producer);
    b.setProducerOutput(in[k].producer_output);
    b.setCarried(in[k].carried);
  }
}

template <class T>
void put_u32(T list, const std::vector<uint32_t>& v) {
  for (size_t k = 0; k < v.size(); ++k)
    list.set(k, v[k]);
}

// The transport's SlotTable of one program: per directed link, its
// transfers in slot order; the arenas of `arena_nodes`.
void put_slot_table(const cluster_config& config, const plan& p,
                    const step_program& prog,
                    const std::vector<uint32_t>& arena_nodes,
                    transport::schema::SlotTable::Builder table) {
  table.setFormatVersion(transport::schema::SLOT_TABLE_FORMAT_VERSION);
  table.setSlotsPerStep(prog.slots_per_step);
  table.setSlotNs(p.slot_ns);
  auto arenas = table.initArenas(arena_nodes.size());
  for (size_t i = 0; i < arena_nodes.size(); ++i) {
    set_chip(arenas[i].initChip(), config.ref(arena_nodes[i]));
    arenas[i].setRecvBytes(prog.arenas[arena_nodes[i]].recv_bytes);
    arenas[i].setSendBytes(prog.arenas[arena_nodes[i]].send_bytes);
  }
  std::map<uint32_t, std::vector<const transfer*>> by_link;
  for (const auto& t : prog.transfers)
    by_link[t.link].push_back(&t);
  auto links = table.initLinks(by_link.size());
  size_t li = 0;
  for (auto& [link, list] : by_link) {
    std::sort(list.begin(), list.end(),
              [](auto* a, auto* b) { return a->start_slot < b->start_slot; });
    auto lb = links[li++];
    set_chip(lb.initSrc(), config.ref(list.front()->src));
    set_chip(lb.initDst(), config.ref(list.front()->dst));
    auto trs = lb.initTransfers(list.size());
    for (size_t k = 0; k < list.size(); ++k) {
      const auto& t = *list[k];
      auto b = trs[k];
      b.setId(t.id);
      b.setStartSlot(t.start_slot);
      b.setDurationSlots(t.duration_slots);
      b.setBytes(t.bytes);
      b.setSrcOffset(t.src_offset);
      auto d = b.initDstOffsets(t.dst_offsets.size());
      for (size_t m = 0; m < t.dst_offsets.size(); ++m)
        d.set(m, t.dst_offsets[m]);
    }
  }
}

// Every host's endpoint is listed, used or not: the transport numbers
// a table's hosts 0..H-1 without gaps, and a host whose chips are all
// idle (spare nodes) still runs a process.
std::vector<uint32_t> arena_nodes_of(const cluster_config& config,
                                     const step_program& prog) {
  std::vector<uint32_t> out;
  for (uint32_t n = 0; n < prog.arenas.size(); ++n)
    if (prog.arenas[n].recv_bytes + prog.arenas[n].send_bytes > 0 ||
        config.is_host_node(n))
      out.push_back(n);
  return out;
}

void put_program(const cluster_config& config, const plan& p,
                 const step_program& prog, schema::Program::Builder root) {
  root.setKind(static_cast<uint8_t>(prog.kind));
  root.setTokens(prog.tokens);
  root.setMicroBatches(prog.micro_batches);
  put_u32(root.initMicroBatchSequences(prog.micro_batch_sequences.size()),
          prog.micro_batch_sequences);
  root.setPeriodSlots(prog.period_slots);
  auto ops = root.initOps(prog.ops.size());
  for (size_t i = 0; i < prog.ops.size(); ++i) {
    const auto& o = prog.ops[i];
    auto b = ops[i];
    b.setId(o.id);
    b.setKind(static_cast<uint8_t>(o.kind));
    set_chip(b.initChip(), config.ref(o.chip));
    b.setLayer(o.layer);
    b.setMicroBatch(o.micro_batch);
    b.setStartSlot(o.start_slot);
    b.setDurationSlots(o.duration_slots);
    b.setDurationNs(o.duration_ns);
    put_u32(b.initAfterOps(o.after_ops.size()), o.after_ops);
    put_u32(b.initAfterTransfers(o.after_transfers.size()), o.after_transfers);
    b.setNBlocks(o.n_blocks);
    auto parts = b.initParts(o.parts.size());
    for (size_t k = 0; k < o.parts.size(); ++k) {
      set_chip(parts[k].initChip(), config.ref(o.parts[k].chip));
      parts[k].setFirstBlock(o.parts[k].first_block);
      parts[k].setEndBlock(o.parts[k].end_block);
    }
    auto nodes = b.initNodes(o.nodes.size());
    for (size_t k = 0; k < o.nodes.size(); ++k) {
      nodes[k].setFirst(o.nodes[k].first);
      nodes[k].setCount(o.nodes[k].count);
    }
    b.setOutFirst(o.out_first);
    b.setOutEnd(o.out_end);
    put_operands(b.initInputs(o.inputs.size()), o.inputs);
    put_operands(b.initOutputs(o.outputs.size()), o.outputs);
    b.setScratchOffset(o.scratch_offset);
    b.setScratchBytes(o.scratch_bytes);
    put_u32(b.initWeights(o.weights.size()), o.weights);
    b.setKv(o.kv);
    put_u32(b.initVocabBounds(o.vocab_bounds.size()), o.vocab_bounds);
  }
  auto tl = root.initTransferLinks(prog.transfers.size());
  for (size_t i = 0; i < prog.transfers.size(); ++i) {
    const auto& t = prog.transfers[i];
    tl[i].setId(t.id);
    tl[i].setAfterOp(t.after_op);
    tl[i].setSrcOutput(t.src_output);
    tl[i].setAfterTransfer(t.after_transfer);
    tl[i].setConsumerOp(t.consumer_op);
    tl[i].setConsumerInput(t.consumer_input);
    tl[i].setPayloadBytes(t.payload_bytes);
  }
  // Nodes that send or receive: the slot table's arenas and the plan's SRAM
  // bases of them.
  auto arena_nodes = arena_nodes_of(config, prog);
  auto bases = root.initArenas(arena_nodes.size());
  for (size_t i = 0; i < arena_nodes.size(); ++i) {
    const auto& a = prog.arenas[arena_nodes[i]];
    set_chip(bases[i].initChip(), config.ref(arena_nodes[i]));
    bases[i].setSendBase(a.send_base);
    bases[i].setSendBytes(a.send_bytes);
    bases[i].setRecvBase(a.recv_base);
    bases[i].setRecvBytes(a.recv_bytes);
    bases[i].setEnd(a.end);
  }
  put_slot_table(config, p, prog, arena_nodes, root.initSlotTable());
}

} // namespace

std::string encode_plan(const cluster_config& config, const plan& p) {
  ::capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<schema::Plan>();
  root.setFormatVersion(schema::PLAN_FORMAT_VERSION);
  root.setPlannerVersion(planner_version);
  root.setDeterminismRuleVersion(model::determinism_rule_version);
  root.setModel(p.model);
  root.setModelSpecJson(model::to_json(p.spec).dump());
  root.setCluster(p.cluster);
  root.setBatch(p.batch);
  root.setContext(p.context);
  root.setTpDegree(p.tp_degree);
  root.setLayersPerGroup(p.layers_per_group);
  root.setIncremental(p.incremental);
  root.setAlignedSplits(p.aligned_splits);
  root.setSlotNs(p.slot_ns);
  auto failed = root.initFailedChips(p.failed_chips.size());
  for (size_t i = 0; i < p.failed_chips.size(); ++i)
    set_chip(failed[i], config.ref(p.failed_chips[i]));
  auto shards = root.initShards(p.shards.size());
  for (size_t i = 0; i < p.shards.size(); ++i) {
    const auto& s = p.shards[i];
    auto b = shards[i];
    set_chip(b.initChip(), config.ref(s.chip));
    b.setLayer(s.tensor.layer);
    b.setTensor(static_cast<uint8_t>(s.tensor.kind));
    b.setRowBegin(s.range.row_begin);
    b.setRowEnd(s.range.row_end);
    b.setColBegin(s.range.col_begin);
    b.setColEnd(s.range.col_end);
    b.setBytes(s.bytes);
    b.setOffset(s.offset);
    b.setScalesOffset(s.scales_offset);
  }
  auto kv = root.initKvSlices(p.kv_slices.size());
  for (size_t i = 0; i < p.kv_slices.size(); ++i) {
    const auto& k = p.kv_slices[i];
    auto b = kv[i];
    set_chip(b.initChip(), config.ref(k.chip));
    b.setLayer(k.layer);
    b.setKvHeadBegin(k.kv_head_begin);
    b.setKvHeadEnd(k.kv_head_end);
    b.setSequences(k.sequences);
    b.setPositions(k.positions);
    b.setKOffset(k.k_offset);
    b.setVOffset(k.v_offset);
  }
  put_program(config, p, p.decode, root.initDecode());
  put_program(config, p, p.prefill, root.initPrefill());
  root.setPlanHash(plan_hash(config, p));
  auto chip_list = [&](auto list, const std::vector<uint32_t>& chips) {
    for (size_t i = 0; i < chips.size(); ++i)
      set_chip(list[i], config.ref(chips[i]));
  };
  chip_list(root.initSpares(p.spares.size()), p.spares);
  chip_list(root.initGroupChips(p.group_chips.size()), p.group_chips);
  chip_list(root.initEmbedChips(p.embed_chips.size()), p.embed_chips);
  chip_list(root.initHeadChips(p.head_chips.size()), p.head_chips);
  set_chip(root.initSampler(), config.ref(p.sampler));
  std::vector<uint32_t> busy;
  for (uint32_t c = 0; c < p.usage.size(); ++c)
    if (p.usage[c].total() > 0)
      busy.push_back(c);
  auto usage = root.initUsage(busy.size());
  for (size_t i = 0; i < busy.size(); ++i) {
    const auto& u = p.usage[busy[i]];
    set_chip(usage[i].initChip(), config.ref(busy[i]));
    usage[i].setWeightBytes(u.weight_bytes);
    usage[i].setKvBytes(u.kv_bytes);
    usage[i].setDecodeBytes(u.decode_bytes);
    usage[i].setPrefillBytes(u.prefill_bytes);
  }
  auto pr = root.initPredicted();
  const auto& q = p.predicted;
  pr.setTokenLatencyUs(q.token_latency_us);
  pr.setTokensPerSPerUser(q.tokens_per_s_per_user);
  pr.setAggregateTokensPerS(q.aggregate_tokens_per_s);
  pr.setTtftMs(q.ttft_ms);
  pr.setTtftPromptTokens(q.ttft_prompt_tokens);
  pr.setLowerBoundTokenLatencyUs(q.lower_bound_token_latency_us);
  pr.setLinkUtilisation(q.link_utilisation);
  pr.setSramUtilisation(q.sram_utilisation);
  auto words = ::capnp::messageToFlatArray(msg);
  auto bytes = words.asBytes();
  return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

std::vector<std::byte> slot_table_of(const cluster_config& config,
                                     const plan& p, program_kind kind) {
  const auto& prog = p.program(kind);
  ::capnp::MallocMessageBuilder msg;
  put_slot_table(config, p, prog, arena_nodes_of(config, prog),
                 msg.initRoot<transport::schema::SlotTable>());
  auto words = ::capnp::messageToFlatArray(msg);
  auto bytes = words.asBytes();
  auto* b = reinterpret_cast<const std::byte*>(bytes.begin());
  return {b, b + bytes.size()};
}

namespace {

// Reads a message with limits sized to the input, so a corrupt or hostile
// buffer fails cleanly instead of exhausting memory.
template <class F>
auto with_plan_reader(const std::string& bytes, F&& fn)
    -> decltype(fn(std::declval<schema::Plan::Reader>())) {
  auto bad = [](const std::string& what) {
    return caf::make_error(errc::invalid_plan, "serialised plan: " + what);
  };
  if (bytes.size() % 8 != 0 || bytes.empty())
    return bad("size " + std::to_string(bytes.size()) +
               " is not a whole number of words");
  std::vector<::capnp::word> words(bytes.size() / 8);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  try {
    ::capnp::ReaderOptions opts;
    opts.traversalLimitInWords = words.size() * 2 + 1024;
    opts.nestingLimit = 16;
    ::capnp::FlatArrayMessageReader reader{
        kj::arrayPtr(words.data(), words.size()), opts};
    auto root = reader.getRoot<schema::Plan>();
    if (root.getFormatVersion() != schema::PLAN_FORMAT_VERSION)
      return bad("format version " + std::to_string(root.getFormatVersion()));
    return fn(root);
  } catch (const kj::Exception& e) {
    return bad(e.getDescription().cStr());
  }
}

} // namespace

namespace {

// Reads Plan messages back into plans: every chip reference resolved (ops
// of host endpoints, and links' ends, may be "h3.host"; shards, slices and
// placement lists name chips only), every id range-checked later by the
// verifier, which callers run on every decoded plan.
class plan_reader {
public:
  plan_reader(const cluster_config& config)
      : config_(config)
      , topo_(config) {}

  caf::expected<uint32_t> chip(transport::schema::ChipId::Reader c) const {
    return config_.flat_chip({c.getHost(), c.getChip()});
  }
  caf::expected<uint32_t> node(transport::schema::ChipId::Reader c) const {
    return config_.flat({c.getHost(), c.getChip()});
  }
  caf::error chips(::capnp::List<transport::schema::ChipId>::Reader list,
                   std::vector<uint32_t>& out) const {
    for (auto c : list) {
      auto f = chip(c);
      if (!f)
        return f.error();
      out.push_back(*f);
    }
    return {};
  }

  static buffer_shape shape(schema::BufferShape::Reader b) {
    return {b.getRows(), b.getColFirst(), b.getCols(), b.getPieces(),
            b.getRowTable()};
  }
  static std::vector<operand>
  operands(::capnp::List<schema::Operand>::Reader list) {
    std::vector<operand> out;
    for (auto o : list)
      out.push_back({o.getOffset(), shape(o.getShape()), o.getTransfer(),
                     o.getProducer(), o.getProducerOutput(), o.getCarried()});
    return out;
  }
  template <class L>
  static std::vector<uint32_t> u32(L list) {
    std::vector<uint32_t> out;
    for (auto v : list)
      out.push_back(v);
    return out;
  }

  caf::error program(schema::Program::Reader r, step_program& prog) {
    prog.kind = static_cast<program_kind>(r.getKind() & 1);
    prog.tokens = r.getTokens();
    prog.micro_batches = r.getMicroBatches();
    prog.micro_batch_sequences = u32(r.getMicroBatchSequences());
    prog.period_slots = r.getPeriodSlots();
    auto table = r.getSlotTable();
    prog.slots_per_step = table.getSlotsPerStep();
    for (auto o : r.getOps()) {
      op x;
      x.id = o.getId();
      x.kind = static_cast<op_kind>(o.getKind());
      if (o.getKind() > static_cast<uint8_t>(op_kind::sample))
        return bad("op " + std::to_string(x.id) + ": unknown kind");
      auto c = node(o.getChip());
      if (!c)
        return c.error();
      x.chip = *c;
      x.layer = o.getLayer();
      x.micro_batch = o.getMicroBatch();
      x.start_slot = o.getStartSlot();
      x.duration_slots = o.getDurationSlots();
      x.duration_ns = o.getDurationNs();
      x.after_ops = u32(o.getAfterOps());
      x.after_transfers = u32(o.getAfterTransfers());
      x.n_blocks = o.getNBlocks();
      for (auto part : o.getParts()) {
        auto pc = chip(part.getChip());
        if (!pc)
          return pc.error();
        x.parts.push_back({*pc, part.getFirstBlock(), part.getEndBlock()});
      }
      for (auto n : o.getNodes())
        x.nodes.push_back({n.getFirst(), n.getCount()});
      x.out_first = o.getOutFirst();
      x.out_end = o.getOutEnd();
      x.inputs = operands(o.getInputs());
      x.outputs = operands(o.getOutputs());
      x.scratch_offset = o.getScratchOffset();
      x.scratch_bytes = o.getScratchBytes();
      x.weights = u32(o.getWeights());
      x.kv = o.getKv();
      x.vocab_bounds = u32(o.getVocabBounds());
      prog.ops.push_back(std::move(x));
    }
    auto facts = r.getTransferLinks();
    prog.transfers.resize(facts.size());
    for (auto l : table.getLinks()) {
      auto src = node(l.getSrc());
      auto dst = node(l.getDst());
      if (!src || !dst)
        return src ? dst.error() : src.error();
      auto link = topo_.find(*src, *dst);
      if (link < 0)
        return bad("no link " + transport::to_string(config_.ref(*src)) +
                   "->" + transport::to_string(config_.ref(*dst)) + " in " +
                   config_.name);
      for (auto t : l.getTransfers()) {
        if (t.getId() >= prog.transfers.size())
          return bad("transfer id " + std::to_string(t.getId()) +
                     " out of range");
        auto& x = prog.transfers[t.getId()];
        x.id = t.getId();
        x.link = static_cast<uint32_t>(link);
        x.src = *src;
        x.dst = *dst;
        x.start_slot = t.getStartSlot();
        x.duration_slots = t.getDurationSlots();
        x.bytes = t.getBytes();
        x.src_offset = t.getSrcOffset();
        for (auto d : t.getDstOffsets())
          x.dst_offsets.push_back(d);
      }
    }
    for (auto f : facts) {
      if (f.getId() >= prog.transfers.size())
        return bad("transfer id out of range");
      auto& x = prog.transfers[f.getId()];
      x.after_op = f.getAfterOp();
      x.src_output = f.getSrcOutput();
      x.after_transfer = f.getAfterTransfer();
      x.consumer_op = f.getConsumerOp();
      x.consumer_input = f.getConsumerInput();
      x.payload_bytes = f.getPayloadBytes();
    }
    prog.arenas.assign(config_.node_count(), {});
    for (auto a : r.getArenas()) {
      auto n = node(a.getChip());
      if (!n)
        return n.error();
      prog.arenas[*n] = {a.getSendBase(), a.getSendBytes(), a.getRecvBase(),
                         a.getRecvBytes(), a.getEnd()};
    }
    return {};
  }

  static caf::error bad(const std::string& what) {
    return caf::make_error(errc::invalid_plan, "serialised plan: " + what);
  }

private:
  const cluster_config& config_;
  topology topo_;
};

} // namespace

caf::expected<plan> decode_plan(const cluster_config& config,
                                const std::string& bytes) {
  return with_plan_reader(
      bytes, [&](schema::Plan::Reader r) -> caf::expected<plan> {
        plan_reader in{config};
        plan p;
        p.model = r.getModel().cStr();
        p.cluster = r.getCluster().cStr();
        nlohmann::json spec_json;
        try {
          spec_json = nlohmann::json::parse(r.getModelSpecJson().cStr());
        } catch (const nlohmann::json::exception&) {
          return plan_reader::bad("model spec is not JSON");
        }
        auto spec = model::spec_from_json(spec_json);
        if (!spec)
          return spec.error();
        if (auto err = model::validate(*spec))
          return plan_reader::bad("model spec: " + render(err));
        p.spec = *spec;
        p.batch = r.getBatch();
        p.context = r.getContext();
        p.tp_degree = r.getTpDegree();
        p.layers_per_group = r.getLayersPerGroup();
        p.incremental = r.getIncremental();
        p.aligned_splits = r.getAlignedSplits();
        p.slot_ns = r.getSlotNs();
        if (auto e = in.chips(r.getFailedChips(), p.failed_chips))
          return e;
        if (auto e = in.chips(r.getSpares(), p.spares))
          return e;
        if (auto e = in.chips(r.getGroupChips(), p.group_chips))
          return e;
        if (auto e = in.chips(r.getEmbedChips(), p.embed_chips))
          return e;
        if (auto e = in.chips(r.getHeadChips(), p.head_chips))
          return e;
        auto sampler = in.node(r.getSampler());
        if (!sampler)
          return sampler.error();
        p.sampler = *sampler;
        for (auto s : r.getShards()) {
          auto c = in.chip(s.getChip());
          if (!c)
            return c.error();
          p.shards.push_back(
              {*c,
               {s.getLayer(), static_cast<model::tensor_kind>(s.getTensor())},
               {s.getRowBegin(), s.getRowEnd(), s.getColBegin(), s.getColEnd()},
               s.getBytes(),
               s.getOffset(),
               s.getScalesOffset()});
        }
        for (auto k : r.getKvSlices()) {
          auto c = in.chip(k.getChip());
          if (!c)
            return c.error();
          p.kv_slices.push_back({*c, k.getLayer(), k.getKvHeadBegin(),
                                 k.getKvHeadEnd(), k.getSequences(),
                                 k.getPositions(), k.getKOffset(),
                                 k.getVOffset()});
        }
        if (auto e = in.program(r.getDecode(), p.decode))
          return e;
        if (auto e = in.program(r.getPrefill(), p.prefill))
          return e;
        p.usage.assign(config.node_count(), {});
        for (auto u : r.getUsage()) {
          auto c = in.node(u.getChip());
          if (!c)
            return c.error();
          p.usage[*c] = {u.getWeightBytes(), u.getKvBytes(),
                         u.getDecodeBytes(), u.getPrefillBytes()};
        }
        std::set<uint32_t> used;
        for (const auto& s : p.shards)
          used.insert(s.chip);
        for (const auto& o : p.decode.ops)
          if (!config.is_host_node(o.chip))
            used.insert(o.chip);
        p.chips_used.assign(used.begin(), used.end());
        auto q = r.getPredicted();
        p.predicted = {
            q.getTokenLatencyUs(),      q.getTokensPerSPerUser(),
            q.getAggregateTokensPerS(), q.getTtftMs(),
            q.getTtftPromptTokens(),    q.getLowerBoundTokenLatencyUs(),
            q.getLinkUtilisation(),     q.getSramUtilisation()};
        return p;
      });
}

caf::expected<std::string> check_encoded_plan(const std::string& bytes) {
  return with_plan_reader(
      bytes, [](schema::Plan::Reader root) -> caf::expected<std::string> {
        for (auto prog : {root.getDecode(), root.getPrefill()}) {
          size_t n = 0;
          for (auto l : prog.getSlotTable().getLinks())
            n += l.getTransfers().size();
          if (n != prog.getTransferLinks().size())
            return caf::make_error(
                errc::invalid_plan,
                "serialised plan: a slot table lists " + std::to_string(n) +
                    " transfers, its program " +
                    std::to_string(prog.getTransferLinks().size()));
        }
        return std::string{root.getPlanHash().cStr()};
      });
}

} // namespace lockstep::planner
