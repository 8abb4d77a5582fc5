#include "transport/slot_program.hpp"

#include "transport/control_messages.hpp"
#include "transport/payload_frame.hpp"

#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <map>
#include <set>

namespace lockstep::transport {

std::string to_string(chip_ref c) {
  if (c.chip == host_endpoint_chip)
    return "h" + std::to_string(c.host) + ".host";
  return "h" + std::to_string(c.host) + ".c" + std::to_string(c.chip);
}

namespace {

caf::error invalid(const std::string& what) {
  return caf::make_error(errc::invalid_table, what);
}

uint64_t fnv1a(const void* data, size_t n) {
  auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct window {
  uint64_t begin;
  uint64_t end;
  uint32_t transfer;
};

// Windows on one arena must be disjoint (or, for sources, identical: one
// tensor sent on several links shares its framed send window).
caf::error check_windows(std::vector<window> ws, bool allow_identical,
                         const std::string& arena_name,
                         const std::vector<transfer_plan>& transfers,
                         const std::vector<link_plan>& links) {
  std::sort(ws.begin(), ws.end(), [](const window& a, const window& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  for (size_t i = 1; i < ws.size(); ++i) {
    const auto& a = ws[i - 1];
    const auto& b = ws[i];
    if (b.begin >= a.end)
      continue;
    if (allow_identical && a.begin == b.begin && a.end == b.end)
      continue;
    const auto& ta = transfers[a.transfer];
    const auto& tb = transfers[b.transfer];
    return invalid(arena_name + ": window [" + std::to_string(b.begin) + ", " +
                   std::to_string(b.end) + ") of link " + links[tb.link].name +
                   " slot " + std::to_string(tb.start_slot) + " overlaps [" +
                   std::to_string(a.begin) + ", " + std::to_string(a.end) +
                   ") of link " + links[ta.link].name + " slot " +
                   std::to_string(ta.start_slot));
  }
  return caf::none;
}

} // namespace

caf::expected<slot_program>
slot_program::load(std::span<const std::byte> message) {
  auto msg = control_reader::open(message, max_message_bytes, "slot table");
  if (!msg)
    return msg.error();
  try {
    return compile(msg->reader().getRoot<schema::SlotTable>());
  } catch (const kj::Exception& e) {
    return caf::make_error(errc::bad_control_message,
                           std::string{"slot table: corrupt message: "} +
                               e.getDescription().cStr());
  }
}

caf::expected<slot_program>
slot_program::compile(schema::SlotTable::Reader table) {
  slot_program out;
  if (table.getFormatVersion() != schema::SLOT_TABLE_FORMAT_VERSION)
    return invalid("slot table format version " +
                   std::to_string(table.getFormatVersion()) + ", expected " +
                   std::to_string(schema::SLOT_TABLE_FORMAT_VERSION));
  out.slots_per_step_ = table.getSlotsPerStep();
  out.slot_ns_ = table.getSlotNs();
  if (out.slots_per_step_ == 0)
    return invalid("slotsPerStep must be > 0");
  out.period_slots_ = table.getPeriodSlots();
  if (out.period_slots_ == 0)
    out.period_slots_ = out.slots_per_step_;
  if (out.period_slots_ > out.slots_per_step_)
    return invalid("periodSlots " + std::to_string(out.period_slots_) +
                   " exceeds slotsPerStep " +
                   std::to_string(out.slots_per_step_) +
                   " (steps would leave idle gaps)");
  // Arenas: unique chips, hosts numbered 0..H-1 without gaps.
  std::set<uint32_t> hosts;
  for (auto a : table.getArenas()) {
    chip_ref c{a.getChip().getHost(), a.getChip().getChip()};
    out.arenas_.push_back({c, a.getRecvBytes(), a.getSendBytes()});
    hosts.insert(c.host);
  }
  std::sort(
      out.arenas_.begin(), out.arenas_.end(),
      [](const arena_plan& a, const arena_plan& b) { return a.chip < b.chip; });
  for (size_t i = 1; i < out.arenas_.size(); ++i)
    if (out.arenas_[i].chip == out.arenas_[i - 1].chip)
      return invalid("arena of chip " + to_string(out.arenas_[i].chip) +
                     " listed twice");
  if (hosts.empty())
    return invalid("the table lists no arenas");
  if (*hosts.rbegin() + 1 != hosts.size())
    return invalid("host ids must be 0.." + std::to_string(hosts.size() - 1) +
                   " without gaps; the highest is " +
                   std::to_string(*hosts.rbegin()));
  out.hosts_ = static_cast<uint32_t>(hosts.size());

  auto links = table.getLinks();
  if (links.size() > max_links)
    return invalid(std::to_string(links.size()) +
                   " links exceed the limit of " + std::to_string(max_links));
  std::map<chip_ref, std::vector<window>> recv_windows, send_windows;
  std::set<std::pair<chip_ref, chip_ref>> seen_links;
  for (uint32_t li = 0; li < links.size(); ++li) {
    auto l = links[li];
    link_plan lp;
    lp.src = {l.getSrc().getHost(), l.getSrc().getChip()};
    lp.dst = {l.getDst().getHost(), l.getDst().getChip()};
    lp.name = to_string(lp.src) + "->" + to_string(lp.dst);
    if (lp.src == lp.dst)
      return invalid("link " + lp.name + ": a chip cannot send to itself");
    if (!seen_links.insert({lp.src, lp.dst}).second)
      return invalid("link " + lp.name + " listed twice");
    const auto* sa = out.arena(lp.src);
    const auto* da = out.arena(lp.dst);
    if (sa == nullptr || da == nullptr)
      return invalid("link " + lp.name + ": chip " +
                     to_string(sa == nullptr ? lp.src : lp.dst) +
                     " has no arena");
    uint32_t next_free = 0;
    for (auto t : l.getTransfers()) {
      transfer_plan tp;
      tp.id = t.getId();
      tp.link = li;
      tp.start_slot = t.getStartSlot();
      tp.duration_slots = t.getDurationSlots();
      tp.bytes = t.getBytes();
      tp.src_offset = t.getSrcOffset();
      for (auto o : t.getDstOffsets())
        tp.dst_offsets.push_back(o);
      auto where = "link " + lp.name + " slot " +
                   std::to_string(tp.start_slot) + " (transfer " +
                   std::to_string(tp.id) + ")";
      if (tp.duration_slots == 0)
        return invalid(where + ": durationSlots must be >= 1");
      if (tp.start_slot < next_free)
        return invalid(where +
                       ": starts before the previous transfer on the "
                       "link ends (slot " +
                       std::to_string(next_free) +
                       "); transfers must be sorted and not overlap");
      if (uint64_t{tp.start_slot} + tp.duration_slots > out.slots_per_step_)
        return invalid(where + ": ends after slot " +
                       std::to_string(out.slots_per_step_) + " (slotsPerStep)");
      next_free = tp.end_slot();
      if (tp.bytes < frame_overhead_bytes || tp.bytes % 8 != 0)
        return invalid(where + ": bytes " + std::to_string(tp.bytes) +
                       " must be a multiple of 8 and >= 24 (framed size, "
                       "see framed_bytes())");
      if (tp.src_offset % 8 != 0 || tp.src_offset > sa->send_bytes ||
          tp.bytes > sa->send_bytes - tp.src_offset)
        return invalid(where + ": source window [" +
                       std::to_string(tp.src_offset) + ", +" +
                       std::to_string(tp.bytes) +
                       ") is unaligned or outside the send arena of " +
                       std::to_string(sa->send_bytes) + " bytes");
      if (tp.dst_offsets.empty() || tp.dst_offsets.size() > max_buffers)
        return invalid(where + ": needs 1.." + std::to_string(max_buffers) +
                       " dstOffsets, has " +
                       std::to_string(tp.dst_offsets.size()));
      auto index = static_cast<uint32_t>(out.transfers_.size());
      for (auto o : tp.dst_offsets) {
        if (o % 8 != 0 || o > da->recv_bytes || tp.bytes > da->recv_bytes - o)
          return invalid(where + ": destination window [" + std::to_string(o) +
                         ", +" + std::to_string(tp.bytes) +
                         ") is unaligned or outside the receive arena of " +
                         std::to_string(da->recv_bytes) + " bytes");
        recv_windows[lp.dst].push_back({o, o + tp.bytes, index});
      }
      send_windows[lp.src].push_back(
          {tp.src_offset, tp.src_offset + tp.bytes, index});
      lp.transfers.push_back(index);
      out.transfers_.push_back(std::move(tp));
    }
    out.links_.push_back(std::move(lp));
  }
  for (auto& [chip, ws] : recv_windows)
    if (auto err =
            check_windows(ws, false, "receive arena of " + to_string(chip),
                          out.transfers_, out.links_))
      return err;
  for (auto& [chip, ws] : send_windows)
    if (auto err = check_windows(ws, true, "send arena of " + to_string(chip),
                                 out.transfers_, out.links_))
      return err;
  auto canonical = capnp::canonicalize(table);
  out.digest_ = fnv1a(canonical.begin(), canonical.asBytes().size());
  return out;
}

const arena_plan* slot_program::arena(chip_ref chip) const {
  auto i = std::lower_bound(
      arenas_.begin(), arenas_.end(), chip,
      [](const arena_plan& a, chip_ref c) { return a.chip < c; });
  return i != arenas_.end() && i->chip == chip ? &*i : nullptr;
}

slot_program slot_program::share_of(uint32_t host) const {
  slot_program out;
  out.slots_per_step_ = slots_per_step_;
  out.period_slots_ = period_slots_;
  out.slot_ns_ = slot_ns_;
  out.hosts_ = hosts_;
  out.digest_ = digest_;
  out.arenas_ = arenas_;
  out.links_.reserve(links_.size());
  constexpr auto none = static_cast<uint32_t>(-1);
  std::vector<uint32_t> renumbered(transfers_.size(), none);
  for (uint32_t i = 0; i < transfers_.size(); ++i) {
    const auto& l = links_[transfers_[i].link];
    if (l.src.host != host && l.dst.host != host)
      continue;
    renumbered[i] = static_cast<uint32_t>(out.transfers_.size());
    out.transfers_.push_back(transfers_[i]);
  }
  for (const auto& l : links_) {
    link_plan kept{l.src, l.dst, l.name, {}};
    if (l.src.host == host || l.dst.host == host)
      for (auto t : l.transfers) // keeps the list's slot order (find())
        kept.transfers.push_back(renumbered[t]);
    out.links_.push_back(std::move(kept));
  }
  return out;
}

std::vector<chip_ref> slot_program::chips_of(uint32_t host) const {
  std::vector<chip_ref> out;
  for (const auto& a : arenas_)
    if (a.chip.host == host)
      out.push_back(a.chip);
  return out;
}

int64_t slot_program::find_link(chip_ref src, chip_ref dst) const {
  for (size_t i = 0; i < links_.size(); ++i)
    if (links_[i].src == src && links_[i].dst == dst)
      return static_cast<int64_t>(i);
  return -1;
}

const transfer_plan* slot_program::find(uint32_t link, uint32_t slot) const {
  if (link >= links_.size())
    return nullptr;
  const auto& ts = links_[link].transfers;
  auto i = std::lower_bound(
      ts.begin(), ts.end(), slot,
      [this](uint32_t t, uint32_t s) { return transfers_[t].start_slot < s; });
  if (i == ts.end() || transfers_[*i].start_slot != slot)
    return nullptr;
  return &transfers_[*i];
}

std::vector<uint32_t> slot_program::send_program(uint32_t host) const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < transfers_.size(); ++i)
    if (links_[transfers_[i].link].src.host == host)
      out.push_back(i);
  std::stable_sort(out.begin(), out.end(), [this](uint32_t a, uint32_t b) {
    return transfers_[a].start_slot < transfers_[b].start_slot;
  });
  return out;
}

std::vector<uint32_t> slot_program::receive_program(uint32_t host) const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < transfers_.size(); ++i)
    if (links_[transfers_[i].link].dst.host == host)
      out.push_back(i);
  std::stable_sort(out.begin(), out.end(), [this](uint32_t a, uint32_t b) {
    return transfers_[a].end_slot() < transfers_[b].end_slot();
  });
  return out;
}

std::vector<slot_op> slot_program::host_program(uint32_t host) const {
  std::vector<slot_op> out;
  for (auto i : send_program(host)) {
    const auto& t = transfers_[i];
    out.push_back({t.start_slot, true, t.link, i, t.start_slot});
  }
  for (auto i : receive_program(host)) {
    const auto& t = transfers_[i];
    out.push_back({t.end_slot(), false, t.link, i, t.start_slot});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const slot_op& a, const slot_op& b) {
                     if (a.slot != b.slot)
                       return a.slot < b.slot;
                     return !a.send && b.send;
                   });
  return out;
}

} // namespace lockstep::transport
