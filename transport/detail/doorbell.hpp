#pragma once

// A host's doorbell: a futex word in a one-page named POSIX shared-memory
// segment, so that peers on the same machine can wake its progress thread.
//
// Why: shm (libfabric 1.17) has no completion wait object: a peer's write
// lands in this host's shared-memory command queue and nothing signals the
// kernel. Without a doorbell an idle progress thread must poll with a
// back-off and sees a write up to one (growing) sleep late. With it the
// thread sleeps in FUTEX_WAIT with no wake-ups while idle, and a peer that
// posted a write (or consumed ours, so our local completion is due) rings
// it: one atomic load per peer and pass, a FUTEX_WAKE only when the owner
// really sleeps. No data crosses the doorbell; every byte still crosses
// libfabric. Only for providers without a CQ descriptor, whose hosts share
// a machine (shm) — a peer whose doorbell cannot be opened is refused at
// start-up.
//
// Ordering (Dekker): the owner sets `sleeping`, fences, then polls the CQ
// once more before FUTEX_WAIT; a ringer's write is in the owner's queue
// before it fences and reads `sleeping`. Either the owner sees the write or
// the ringer sees the sleeper.
//
// Thread-safety: ring() from any thread or process; arm/sleep/disarm from
// the owner's progress thread.

#include "transport/errc.hpp"

#include <caf/expected.hpp>

#include <atomic>
#include <cstdint>
#include <string>

namespace lockstep::transport::detail {

class doorbell {
public:
  /// Creates this host's doorbell under a fresh name; removed (shm_unlink)
  /// when the owner is destroyed.
  static caf::expected<doorbell> create(uint32_t host);
  /// Maps a peer's doorbell by the name its hello carries.
  static caf::expected<doorbell> open(const std::string& name);

  doorbell() = default;
  doorbell(doorbell&& o) noexcept;
  doorbell& operator=(doorbell&& o) noexcept;
  doorbell(const doorbell&) = delete;
  doorbell& operator=(const doorbell&) = delete;
  ~doorbell();

  explicit operator bool() const { return page_ != nullptr; }
  const std::string& name() const { return name_; }

  /// Owner: announce the sleep; returns the futex value to wait on.
  uint32_t arm();
  /// Owner: sleeps until rung (the value moved off `seen`) or `ns` passed.
  void sleep(uint32_t seen, int64_t ns);
  void disarm();

  /// Wakes the owner if it sleeps (cheap otherwise).
  void ring();

private:
  struct page {
    std::atomic<uint32_t> seq;
    std::atomic<uint32_t> sleeping;
  };
  page* page_ = nullptr;
  std::string name_;
  bool owner_ = false;
};

} // namespace lockstep::transport::detail
