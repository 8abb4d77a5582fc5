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
  root.setMicroBatches(p.micro_batches);
  root.setTpDegree(p.tp_degree);
  root.setLayersPerGroup(p.layers_per_group);
  root.setIncremental(p.incremental);
  root.setAlignedSplits(p.aligned_splits);
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
  }
  auto ops = root.initOps(p.ops.size());
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const auto& o = p.ops[i];
    auto b = ops[i];
    b.setId(o.id);
    b.setKind(static_cast<uint8_t>(o.kind));
    set_chip(b.initChip(), config.ref(o.chip));
    b.setLayer(o.layer);
    b.setMicroBatch(o.micro_batch);
    b.setStartSlot(o.start_slot);
    b.setDurationSlots(o.duration_slots);
    auto ao = b.initAfterOps(o.after_ops.size());
    for (size_t k = 0; k < o.after_ops.size(); ++k)
      ao.set(k, o.after_ops[k]);
    auto at = b.initAfterTransfers(o.after_transfers.size());
    for (size_t k = 0; k < o.after_transfers.size(); ++k)
      at.set(k, o.after_transfers[k]);
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
  }
  auto tl = root.initTransferLinks(p.transfers.size());
  for (size_t i = 0; i < p.transfers.size(); ++i) {
    const auto& t = p.transfers[i];
    tl[i].setId(t.id);
    tl[i].setAfterOp(t.after_op);
    tl[i].setAfterTransfer(t.after_transfer);
    tl[i].setConsumerOp(t.consumer_op);
    tl[i].setPayloadBytes(t.payload_bytes);
  }
  // The slot table: per directed link, its transfers in slot order.
  auto table = root.initSlotTable();
  table.setFormatVersion(transport::schema::SLOT_TABLE_FORMAT_VERSION);
  table.setSlotsPerStep(p.slots_per_step);
  table.setSlotNs(p.slot_ns);
  std::map<uint32_t, std::vector<const transfer*>> by_link;
  for (const auto& t : p.transfers)
    by_link[t.link].push_back(&t);
  std::vector<uint32_t> arena_chips;
  for (uint32_t c = 0; c < p.usage.size(); ++c)
    if (p.usage[c].recv_arena_bytes + p.usage[c].send_arena_bytes > 0)
      arena_chips.push_back(c);
  auto arenas = table.initArenas(arena_chips.size());
  for (size_t i = 0; i < arena_chips.size(); ++i) {
    set_chip(arenas[i].initChip(), config.ref(arena_chips[i]));
    arenas[i].setRecvBytes(p.usage[arena_chips[i]].recv_arena_bytes);
    arenas[i].setSendBytes(p.usage[arena_chips[i]].send_arena_bytes);
  }
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
  root.setPlanHash(plan_hash(config, p));
  auto chip_list = [&](auto list, const std::vector<uint32_t>& chips) {
    for (size_t i = 0; i < chips.size(); ++i)
      set_chip(list[i], config.ref(chips[i]));
  };
  chip_list(root.initSpares(p.spares.size()), p.spares);
  chip_list(root.initGroupChips(p.group_chips.size()), p.group_chips);
  chip_list(root.initEmbedChips(p.embed_chips.size()), p.embed_chips);
  chip_list(root.initHeadChips(p.head_chips.size()), p.head_chips);
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
    usage[i].setRecvArenaBytes(u.recv_arena_bytes);
    usage[i].setSendArenaBytes(u.send_arena_bytes);
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

caf::expected<plan> decode_plan(const cluster_config& config,
                                const std::string& bytes) {
  return with_plan_reader(
      bytes, [&](schema::Plan::Reader r) -> caf::expected<plan> {
        auto bad = [](const std::string& what) {
          return caf::make_error(errc::invalid_plan,
                                 "serialised plan: " + what);
        };
        // Ops, shards, usage and chip lists name chips (arrays sized by
        // chip_count() are indexed with them); a link's ends may also be
        // host endpoints ("h3.host").
        auto flat = [&](transport::schema::ChipId::Reader c) {
          return config.flat_chip({c.getHost(), c.getChip()});
        };
        auto node = [&](transport::schema::ChipId::Reader c) {
          return config.flat({c.getHost(), c.getChip()});
        };
        auto chips = [&](auto list, std::vector<uint32_t>& out) -> caf::error {
          for (auto c : list) {
            auto f = flat(c);
            if (!f)
              return f.error();
            out.push_back(*f);
          }
          return {};
        };
        plan p;
        p.model = r.getModel().cStr();
        p.cluster = r.getCluster().cStr();
        nlohmann::json spec_json;
        try {
          spec_json = nlohmann::json::parse(r.getModelSpecJson().cStr());
        } catch (const nlohmann::json::exception&) {
          return bad("model spec is not JSON");
        }
        auto spec = model::spec_from_json(spec_json);
        if (!spec)
          return spec.error();
        p.spec = *spec;
        p.batch = r.getBatch();
        p.context = r.getContext();
        p.micro_batches = r.getMicroBatches();
        p.tp_degree = r.getTpDegree();
        p.layers_per_group = r.getLayersPerGroup();
        p.incremental = r.getIncremental();
    p.aligned_splits = r.getAlignedSplits();
        auto table = r.getSlotTable();
        p.slot_ns = table.getSlotNs();
        p.slots_per_step = table.getSlotsPerStep();
        if (auto e = chips(r.getFailedChips(), p.failed_chips))
          return e;
        if (auto e = chips(r.getSpares(), p.spares))
          return e;
        if (auto e = chips(r.getGroupChips(), p.group_chips))
          return e;
        if (auto e = chips(r.getEmbedChips(), p.embed_chips))
          return e;
        if (auto e = chips(r.getHeadChips(), p.head_chips))
          return e;
        for (auto s : r.getShards()) {
          auto c = flat(s.getChip());
          if (!c)
            return c.error();
          p.shards.push_back(
              {*c,
               {s.getLayer(), static_cast<model::tensor_kind>(s.getTensor())},
               {s.getRowBegin(), s.getRowEnd(), s.getColBegin(), s.getColEnd()},
               s.getBytes()});
        }
        for (auto o : r.getOps()) {
          op x;
          x.id = o.getId();
          x.kind = static_cast<op_kind>(o.getKind());
          auto c = flat(o.getChip());
          if (!c)
            return c.error();
          x.chip = *c;
          x.layer = o.getLayer();
          x.micro_batch = o.getMicroBatch();
          x.start_slot = o.getStartSlot();
          x.duration_slots = o.getDurationSlots();
          for (auto a : o.getAfterOps())
            x.after_ops.push_back(a);
          for (auto a : o.getAfterTransfers())
            x.after_transfers.push_back(a);
          x.n_blocks = o.getNBlocks();
          for (auto part : o.getParts()) {
            auto pc = flat(part.getChip());
            if (!pc)
              return pc.error();
            x.parts.push_back({*pc, part.getFirstBlock(), part.getEndBlock()});
          }
          for (auto n : o.getNodes())
            x.nodes.push_back({n.getFirst(), n.getCount()});
          x.out_first = o.getOutFirst();
          x.out_end = o.getOutEnd();
          p.ops.push_back(std::move(x));
        }
        auto facts = r.getTransferLinks();
        p.transfers.resize(facts.size());
        topology topo{config};
        for (auto l : table.getLinks()) {
          auto src = node(l.getSrc());
          auto dst = node(l.getDst());
          if (!src || !dst)
            return src ? dst.error() : src.error();
          auto link = topo.find(*src, *dst);
          if (link < 0)
            return bad("no link " + transport::to_string(config.ref(*src)) +
                       "->" + transport::to_string(config.ref(*dst)) + " in " +
                       config.name);
          for (auto t : l.getTransfers()) {
            if (t.getId() >= p.transfers.size())
              return bad("transfer id " + std::to_string(t.getId()) +
                         " out of range");
            auto& x = p.transfers[t.getId()];
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
          if (f.getId() >= p.transfers.size())
            return bad("transfer id out of range");
          auto& x = p.transfers[f.getId()];
          x.after_op = f.getAfterOp();
          x.after_transfer = f.getAfterTransfer();
          x.consumer_op = f.getConsumerOp();
          x.payload_bytes = f.getPayloadBytes();
        }
        p.usage.assign(config.chip_count(), {});
        for (auto u : r.getUsage()) {
          auto c = flat(u.getChip());
          if (!c)
            return c.error();
          p.usage[*c] = {u.getWeightBytes(), u.getKvBytes(),
                         u.getRecvArenaBytes(), u.getSendArenaBytes()};
        }
        std::set<uint32_t> used;
        for (const auto& s : p.shards)
          used.insert(s.chip);
        for (const auto& o : p.ops)
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
        size_t n = 0;
        for (auto l : root.getSlotTable().getLinks())
          n += l.getTransfers().size();
        if (n != root.getTransferLinks().size())
          return caf::make_error(
              errc::invalid_plan,
              "serialised plan: slot table lists " + std::to_string(n) +
                  " transfers, plan " +
                  std::to_string(root.getTransferLinks().size()));
        return std::string{root.getPlanHash().cStr()};
      });
}

} // namespace lockstep::planner
