#pragma once

// Builds SlotTable control messages from plain structs: for the planner's
// serialisation, for tests and for the benchmark. Also generates the
// synthetic "each chip feeds the next k chips" pattern tests and benchmarks
// run (a fan-out/fan-in mix across hosts, including chip pairs on one host).

#include "transport/slot_program.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lockstep::transport {

struct transfer_spec {
  uint32_t id = 0;
  uint32_t start_slot = 0;
  uint32_t duration_slots = 1;
  uint64_t bytes = 0;
  uint64_t src_offset = 0;
  std::vector<uint64_t> dst_offsets;
};

struct link_spec {
  chip_ref src;
  chip_ref dst;
  std::vector<transfer_spec> transfers;
};

struct table_spec {
  uint32_t slots_per_step = 1;
  uint32_t period_slots = 0; // 0: slots_per_step
  uint64_t slot_ns = 0;
  std::vector<arena_plan> arenas;
  std::vector<link_spec> links;
};

/// Serialises `spec` as a flat SlotTable message (no validation: the
/// transport validates on load, so tests can build broken tables).
std::vector<std::byte> build_slot_table(const table_spec& spec);

/// `hosts` x `chips_per_host` chips numbered g = host * chips + chip; chip g
/// sends to chips g+1 .. g+fanout (mod count), `transfers_per_link`
/// transfers of `payload_bytes` each per step, one slot each, double
/// buffered (`buffers` receive windows per transfer).
table_spec ring_pattern(uint32_t hosts, uint32_t chips_per_host,
                        uint32_t fanout, uint32_t transfers_per_link,
                        uint64_t payload_bytes, uint32_t buffers = 2,
                        uint64_t slot_ns = 0);

} // namespace lockstep::transport
