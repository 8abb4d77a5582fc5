#pragma once

// The 64 bits of remote CQ data that accompany each write: the only thing
// besides the planned bytes that crosses the fabric. For a tensor transfer it
// is the slot id (link index, absolute slot); the receiver derives from it
// which transfer completed — it never says where the bytes go.
//
//   bits 63..62  kind: 0 data, 1 release (back-pressure credit), 2 control,
//                3 raw (the benchmark's baseline; never sent by the transport)
//   data:     61..42 link index (20 bits), 41..0 absolute slot
//             (step * slotsPerStep + startSlot; 4.4e12 slots = 5 days of
//             100 ns slots before the sender refuses to go on)
//   release:  61..42 link index, 41..0 step released
//   control:  61..58 subkind, 57..48 sending host, 47..0 value (clock, ns,
//             truncated to 48 bits and widened by the reader)
//
// 20 link bits: a 1,500-chip plan uses ~20,000 directed links (reduce-
// scatter and all-gather inside every node of every layer group).

#include <cstdint>

namespace lockstep::transport::detail::cq_data {

enum class kind : uint8_t { data = 0, release = 1, control = 2, raw = 3 };
// ping/pong: the start-up alignment (pong value: host 0's clock, 48 bits).
// resync_ping/resync_pong: periodic re-sync while running; the ping's value
// is a sequence number, the pong's (host 0's clock mod 2^40) << 8 | seq, so
// a pong that straggles in after its ping was given up is recognised.
enum class control : uint8_t {
  ping,
  pong,
  sync_done,
  epoch,
  bye,
  resync_ping,
  resync_pong,
  hello // start-up: opens the connection (host_transport::impl::connect)
};

inline constexpr uint64_t value_mask = (uint64_t{1} << 48) - 1; // control
inline constexpr unsigned link_bits = 20;
inline constexpr uint64_t link_mask = (uint64_t{1} << link_bits) - 1;
inline constexpr unsigned slot_bits = 62 - link_bits;
inline constexpr uint64_t slot_mask = (uint64_t{1} << slot_bits) - 1;
inline constexpr uint32_t max_hosts = 1024;

constexpr kind kind_of(uint64_t d) {
  return static_cast<kind>(d >> 62);
}
/// Link index of a data or release completion.
constexpr uint32_t link_of(uint64_t d) {
  return static_cast<uint32_t>((d >> slot_bits) & link_mask);
}
/// Absolute slot (data) or step (release).
constexpr uint64_t slot_value_of(uint64_t d) {
  return d & slot_mask;
}
/// Value of a control completion.
constexpr uint64_t value_of(uint64_t d) {
  return d & value_mask;
}
constexpr control control_of(uint64_t d) {
  return static_cast<control>((d >> 58) & 0xf);
}
constexpr uint32_t host_of(uint64_t d) {
  return static_cast<uint32_t>((d >> 48) & 0x3ff);
}

// REQUIRES: link <= link_mask, abs_slot / step <= slot_mask.
constexpr uint64_t make_data(uint32_t link, uint64_t abs_slot) {
  return ((uint64_t{link} & link_mask) << slot_bits) | (abs_slot & slot_mask);
}
constexpr uint64_t make_release(uint32_t link, uint64_t step) {
  return (uint64_t{1} << 62) | ((uint64_t{link} & link_mask) << slot_bits) |
         (step & slot_mask);
}
constexpr uint64_t make_control(control c, uint32_t host, uint64_t value) {
  return (uint64_t{2} << 62) | (uint64_t{static_cast<uint8_t>(c)} << 58) |
         (uint64_t{host & 0x3ff} << 48) | (value & value_mask);
}

/// The 64-bit value nearest `ref` whose low `bits` bits are `v`.
constexpr int64_t widen(uint64_t v, int64_t ref, unsigned bits = 48) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  auto base = static_cast<int64_t>(static_cast<uint64_t>(ref) & ~mask);
  auto x = base | static_cast<int64_t>(v & mask);
  const int64_t span = int64_t{1} << bits;
  if (x - ref > span / 2)
    x -= span;
  else if (ref - x > span / 2)
    x += span;
  return x;
}

/// Resync pong value: clock mod 2^40 (18 minutes; the running estimate is
/// within milliseconds) and the ping's sequence number.
inline constexpr unsigned resync_clock_bits = 40;
constexpr uint64_t make_resync_pong_value(int64_t clock, uint16_t seq) {
  return ((static_cast<uint64_t>(clock) &
           ((uint64_t{1} << resync_clock_bits) - 1))
          << 8) |
         (seq & 0xffu);
}

} // namespace lockstep::transport::detail::cq_data
