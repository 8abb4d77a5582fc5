#include "transport/table_builder.hpp"

#include "transport/control_messages.hpp"
#include "transport/payload_frame.hpp"

#include <capnp/message.h>

#include <map>

namespace lockstep::transport {

std::vector<std::byte> build_slot_table(const table_spec& spec) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::SlotTable>();
  root.setFormatVersion(schema::SLOT_TABLE_FORMAT_VERSION);
  root.setSlotsPerStep(spec.slots_per_step);
  root.setSlotNs(spec.slot_ns);
  root.setPeriodSlots(spec.period_slots);
  auto arenas = root.initArenas(static_cast<unsigned>(spec.arenas.size()));
  for (size_t i = 0; i < spec.arenas.size(); ++i) {
    arenas[i].getChip().setHost(spec.arenas[i].chip.host);
    arenas[i].getChip().setChip(spec.arenas[i].chip.chip);
    arenas[i].setRecvBytes(spec.arenas[i].recv_bytes);
    arenas[i].setSendBytes(spec.arenas[i].send_bytes);
  }
  auto links = root.initLinks(static_cast<unsigned>(spec.links.size()));
  for (size_t i = 0; i < spec.links.size(); ++i) {
    const auto& ls = spec.links[i];
    links[i].getSrc().setHost(ls.src.host);
    links[i].getSrc().setChip(ls.src.chip);
    links[i].getDst().setHost(ls.dst.host);
    links[i].getDst().setChip(ls.dst.chip);
    auto ts =
        links[i].initTransfers(static_cast<unsigned>(ls.transfers.size()));
    for (size_t j = 0; j < ls.transfers.size(); ++j) {
      const auto& t = ls.transfers[j];
      ts[j].setId(t.id);
      ts[j].setStartSlot(t.start_slot);
      ts[j].setDurationSlots(t.duration_slots);
      ts[j].setBytes(t.bytes);
      ts[j].setSrcOffset(t.src_offset);
      auto d =
          ts[j].initDstOffsets(static_cast<unsigned>(t.dst_offsets.size()));
      for (size_t k = 0; k < t.dst_offsets.size(); ++k)
        d.set(static_cast<unsigned>(k), t.dst_offsets[k]);
    }
  }
  return to_bytes(builder);
}

table_spec ring_pattern(uint32_t hosts, uint32_t chips_per_host,
                        uint32_t fanout, uint32_t transfers_per_link,
                        uint64_t payload_bytes, uint32_t buffers,
                        uint64_t slot_ns) {
  table_spec spec;
  // Two slot phases so consecutive links of a chip start in different slots.
  spec.slots_per_step = 2 * transfers_per_link;
  spec.slot_ns = slot_ns;
  uint32_t count = hosts * chips_per_host;
  auto chip_of = [&](uint32_t g) {
    return chip_ref{g / chips_per_host, g % chips_per_host};
  };
  uint64_t bytes = framed_bytes(payload_bytes);
  std::map<uint32_t, uint64_t> send_used, recv_used;
  uint32_t id = 0;
  for (uint32_t g = 0; g < count; ++g)
    for (uint32_t k = 1; k <= fanout && k < count; ++k) {
      uint32_t d = (g + k) % count;
      link_spec ls{chip_of(g), chip_of(d), {}};
      for (uint32_t j = 0; j < transfers_per_link; ++j) {
        transfer_spec t;
        t.id = id++;
        t.start_slot = 2 * j + (k % 2);
        t.bytes = bytes;
        t.src_offset = send_used[g];
        send_used[g] += bytes;
        for (uint32_t b = 0; b < buffers; ++b) {
          t.dst_offsets.push_back(recv_used[d]);
          recv_used[d] += bytes;
        }
        ls.transfers.push_back(std::move(t));
      }
      spec.links.push_back(std::move(ls));
    }
  for (uint32_t g = 0; g < count; ++g)
    spec.arenas.push_back({chip_of(g), recv_used[g], send_used[g]});
  return spec;
}

} // namespace lockstep::transport
