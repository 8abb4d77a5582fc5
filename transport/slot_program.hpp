#pragma once

// A loaded, validated slot table, compiled into per-host send and receive
// programs. Pure data: no fabric. The transport executes exactly what this
// lists and refuses everything else.

#include "transport/errc.hpp"
#include "transport/slot_table.capnp.h"

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lockstep::transport {

/// Chip `chip` of host `host`, written "h3.c5"; or, with
/// `chip == host_endpoint_chip`, host `host`'s own endpoint (the process
/// that samples tokens), written "h3.host".
struct chip_ref {
  uint32_t host = 0;
  uint32_t chip = 0;
  friend bool operator==(const chip_ref&, const chip_ref&) = default;
  friend auto operator<=>(const chip_ref&, const chip_ref&) = default;
};

/// The `chip` of a chip_ref that names its host's endpoint rather than a
/// chip: no host has 2^32 - 1 chips, so it cannot collide with one.
inline constexpr uint32_t host_endpoint_chip = 0xFFFFFFFFu;

/// "h3.c5", or "h3.host" for a host endpoint.
std::string to_string(chip_ref c);

/// One scheduled transfer (one entry of a LinkSchedule).
struct transfer_plan {
  uint32_t id = 0;         // plan-wide id (errors, traces); never sent
  uint32_t link = 0;       // index into slot_program::links
  uint32_t start_slot = 0; // first slot within a step
  uint32_t duration_slots = 1;
  uint64_t bytes = 0;                // framed bytes that cross the link
  uint64_t src_offset = 0;           // into the sender chip's send arena
  std::vector<uint64_t> dst_offsets; // receive arena offset per step parity
  /// Receive buffer of `step`.
  uint64_t dst_offset(uint64_t step) const {
    return dst_offsets[step % dst_offsets.size()];
  }
  /// Last slot (exclusive) of the transfer's window.
  uint32_t end_slot() const { return start_slot + duration_slots; }
};

struct link_plan {
  chip_ref src;
  chip_ref dst;
  std::string name;                // "h0.c1->h1.c0"
  std::vector<uint32_t> transfers; // indices into slot_program::transfers
};

struct arena_plan {
  chip_ref chip;
  uint64_t recv_bytes = 0;
  uint64_t send_bytes = 0;
};

/// One step of a host's merged slot program: a send at the transfer's start
/// slot or a receive at its end slot.
struct slot_op {
  uint32_t slot = 0;
  bool send = false;
  uint32_t link = 0;
  uint32_t transfer = 0;   // index into slot_program::transfers
  uint32_t start_slot = 0; // the transfer's start slot (its key on the link)
};

class slot_program {
public:
  /// Upper bound on a slot-table control message (64 MiB).
  static constexpr size_t max_message_bytes = size_t{64} << 20;
  /// Links are numbered in remote CQ data with 20 bits (detail/cq_data.hpp).
  static constexpr size_t max_links = size_t{1} << 20;
  /// At most this many alternating receive buffers per transfer.
  static constexpr size_t max_buffers = 8;

  /// Parses a serialised SlotTable (a flat, single- or multi-segment Cap'n
  /// Proto message), with traversal and nesting limits, and validates it.
  static caf::expected<slot_program> load(std::span<const std::byte> message);

  /// Validates and compiles an already-read table.
  static caf::expected<slot_program> compile(schema::SlotTable::Reader table);

  /// What `host` runs of this table: the transfers of links that start or
  /// end on it (renumbered, in table order), every link's endpoints (the
  /// wire names links by their table index) and every arena. Slot counts,
  /// slot length and digest are the whole table's: hosts still check they
  /// run the same one. A host of a 1500-chip plan keeps ~1/12 of it.
  slot_program share_of(uint32_t host) const;

  uint32_t slots_per_step() const { return slots_per_step_; }
  /// Steps start every period_slots() slots (== slots_per_step() unless the
  /// table lets steps overlap); paced mode times slots with it.
  uint32_t period_slots() const { return period_slots_; }
  uint64_t slot_ns() const { return slot_ns_; }
  uint32_t hosts() const { return hosts_; }
  /// FNV-1a of the canonical table; hosts check they run the same one.
  uint64_t digest() const { return digest_; }

  const std::vector<arena_plan>& arenas() const { return arenas_; }
  const std::vector<link_plan>& links() const { return links_; }
  const std::vector<transfer_plan>& transfers() const { return transfers_; }

  /// The arena of `chip`, or nullptr.
  const arena_plan* arena(chip_ref chip) const;
  /// Chips of `host`, in chip order.
  std::vector<chip_ref> chips_of(uint32_t host) const;
  /// Index of the link src->dst, or -1.
  int64_t find_link(chip_ref src, chip_ref dst) const;
  /// The transfer of `link` starting at `slot`, or nullptr.
  const transfer_plan* find(uint32_t link, uint32_t slot) const;

  /// Transfers `host` sends, ordered by (start_slot, link).
  std::vector<uint32_t> send_program(uint32_t host) const;
  /// Transfers `host` receives, ordered by (end_slot, link).
  std::vector<uint32_t> receive_program(uint32_t host) const;
  /// Sends and receives of `host` merged in slot order, receives due at a
  /// slot before the sends starting in it. Every op depends only on ops of
  /// earlier slots, so executing it in order on every host cannot deadlock.
  std::vector<slot_op> host_program(uint32_t host) const;

private:
  uint32_t slots_per_step_ = 0;
  uint32_t period_slots_ = 0;
  uint64_t slot_ns_ = 0;
  uint32_t hosts_ = 0;
  uint64_t digest_ = 0;
  std::vector<arena_plan> arenas_; // sorted by chip
  std::vector<link_plan> links_;
  std::vector<transfer_plan> transfers_;
};

} // namespace lockstep::transport
