#pragma once

// Private state of slotted_transport shared by its implementation files
// (start-up, progress, slot program). Not a public header.

#include "transport/control_messages.hpp"
#include "transport/detail/cq_data.hpp"
#include "transport/payload_frame.hpp"
#include "transport/slotted_transport.hpp"

#include <cstdint>
#include <ctime>
#include <map>
#include <string>
#include <thread>

namespace lockstep::transport {

struct slotted_transport::local_arena {
  chip_ref chip;
  detail::mapped_buffer memory;
  detail::memory_region mr;
};

struct slotted_transport::peer {
  fi_addr_t addr = FI_ADDR_NOTAVAIL;
  uint64_t mailbox_base = 0;
  uint64_t mailbox_key = 0;
  // By chip index; a host endpoint's (chip host_endpoint_chip) too, so a
  // map rather than a vector indexed by the id.
  std::map<uint32_t, arena_key> arenas;
};

struct slotted_transport::out_state {
  std::byte* window = nullptr; // framed send window (registered)
  void* desc = nullptr;
  std::span<std::byte> payload; // inside window
  fi_addr_t dest = FI_ADDR_NOTAVAIL;
  uint64_t remote_base = 0; // add dst_offset(step)
  uint64_t key = 0;
  bool in_flight = false;
  int64_t last_sent_step = -1;
};

struct slotted_transport::in_state {
  const std::byte* arena = nullptr; // this chip's receive arena
  struct arrival {
    uint64_t step;
    int64_t at_ns;
  };
  std::vector<arrival> arrivals; // completed, not yet consumed
  int64_t last_consumed_step = -1;
};

namespace detail {

// Op contexts: 1 for control writes, 2 + transfer index for data writes.
inline constexpr uintptr_t control_context = 1;

inline void* data_context(uint32_t transfer) {
  return reinterpret_cast<void*>(uintptr_t{2} + transfer);
}

inline int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Polite idling: 2 cores are shared by every host process of a local
// cluster, so a waiter spins briefly, then yields, then naps.
struct backoff {
  uint32_t idle = 0;
  void reset() { idle = 0; }
  void pause() {
    ++idle;
    if (idle < 256)
      return;
    if (idle < 20'000) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
};

inline std::string ns_text(int64_t ns) {
  return std::to_string(ns / 1000) + " us";
}
} // namespace detail

template <class Pred>
caf::error slotted_transport::progress_until(
    Pred&& done, int64_t deadline_ns,
    const std::function<caf::error()>& on_timeout) {
  detail::backoff idle;
  for (;;) {
    if (auto err = progress())
      return err;
    if (done())
      return caf::none;
    if (now_ns() > deadline_ns)
      return on_timeout();
    idle.pause();
  }
}

} // namespace lockstep::transport
