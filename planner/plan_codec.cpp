#include "planner/plan_codec.hpp"

#include "common/digest.hpp"
#include "model/block_rule.hpp"
#include "model/spec_json.hpp"
#include "planner/plan.capnp.h"
#include "transport/slot_table.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <map>

namespace lockstep::planner {

namespace {

void set_chip(transport::schema::ChipId::Builder b, transport::chip_ref r) {
  b.setHost(r.host);
  b.setChip(r.chip);
}

} // namespace

std::string plan_hash(const cluster_config& config, const plan& p) {
  std::string in = model::to_json(p.spec).dump() + "\n" +
                   canonical_form(config) + "batch " + std::to_string(p.batch) +
                   "\ncontext " + std::to_string(p.context) + "\nfailed";
  for (auto f : p.failed_chips)
    in += " " + std::to_string(f);
  in += "\nplanner " + std::to_string(planner_version) + "\nrule " +
        std::to_string(model::determinism_rule_version) + "\n";
  sha256 h;
  h.update(std::as_bytes(std::span{in.data(), in.size()}));
  return h.hex_digest();
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
  auto words = ::capnp::messageToFlatArray(msg);
  auto bytes = words.asBytes();
  return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

caf::expected<std::string> check_encoded_plan(const std::string& bytes) {
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
    size_t n = 0;
    for (auto l : root.getSlotTable().getLinks())
      n += l.getTransfers().size();
    if (n != root.getTransferLinks().size())
      return bad("slot table lists " + std::to_string(n) + " transfers, plan " +
                 std::to_string(root.getTransferLinks().size()));
    return std::string{root.getPlanHash().cStr()};
  } catch (const kj::Exception& e) {
    return bad(e.getDescription().cStr());
  }
}

} // namespace lockstep::planner
