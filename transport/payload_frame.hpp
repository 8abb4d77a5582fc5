#pragma once

// The fixed Cap'n Proto framing of a tensor transfer (payload.capnp): a
// single-segment message of exactly `bytes` bytes whose Data field fills all
// but 24 of them. Written once per send window when the plan loads; read in
// place on the receiver.

#include "transport/errc.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace lockstep::transport {

/// Segment table (8) + root pointer (8) + Data list pointer (8).
inline constexpr uint64_t frame_overhead_bytes = 24;

/// Transfer bytes for a payload of `payload_bytes` (padded to 8 bytes). The
/// planner sizes every Transfer.bytes with this.
constexpr uint64_t framed_bytes(uint64_t payload_bytes) {
  return frame_overhead_bytes + (payload_bytes + 7) / 8 * 8;
}

/// Payload bytes a transfer of `bytes` framed bytes carries.
constexpr uint64_t payload_bytes_of(uint64_t bytes) {
  return bytes - frame_overhead_bytes;
}

/// Lays out the framing in `window` (8-byte aligned, size a multiple of 8,
/// >= 24) and returns the payload bytes inside it. Zeroes the window once.
caf::expected<std::span<std::byte>> write_frame(std::span<std::byte> window);

/// Reads the message in `window` in place (FlatArrayMessageReader with
/// traversal and nesting limits) and returns its payload, which must be
/// exactly `window.size() - 24` bytes. Errors are errc::bad_payload.
caf::expected<std::span<const std::byte>>
read_frame(std::span<const std::byte> window);

} // namespace lockstep::transport
