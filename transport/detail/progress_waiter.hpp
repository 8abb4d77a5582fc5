#pragma once

// How an idle progress thread waits without burning a core. A local cluster
// runs 8-16 host processes on 2 shared cores, so every cycle an idle host
// spends polling is taken from a host that computes.
//
// - With a CQ file descriptor (tcp;ofi_rxm: FI_WAIT_FD) the thread blocks in
//   ppoll() on it and on an eventfd that other threads signal (post_send,
//   release, wake). A peer's write makes the descriptor readable.
// - Without one (shm 1.17 offers only FI_WAIT_YIELD, a spin) it polls the CQ
//   with an exponential back-off: polls for spin_ns after activity, then
//   sleeps growing by 1.5x up to max_sleep_ns, each a ppoll() on the
//   eventfd so a local wake still ends the sleep at once. A peer's write is
//   seen at most one sleep late; the sleep never exceeds the idle time so
//   far by more than half of it.
// - Better, without a descriptor but with peers on this machine (shm), the
//   thread sleeps on its doorbell (detail/doorbell.hpp), which peers ring
//   when they write to it: no periodic wake-ups, no late arrivals.
//
// Thread-safety: notify() from any thread; everything else from the
// progress thread only.

#include "transport/errc.hpp"

#include <caf/expected.hpp>

#include <atomic>
#include <cstdint>
#include <functional>

namespace lockstep::transport::detail {

class doorbell;

/// Sleeps of this thread end within ~1 us of their deadline instead of
/// Linux's default 50 us timer slack while the guard lives (restored after):
/// a paced send leaves, and an arrival or a clock pong is time-stamped, that
/// much closer to the slot clock.
class timer_slack_guard {
public:
  timer_slack_guard();
  ~timer_slack_guard();
  timer_slack_guard(const timer_slack_guard&) = delete;
  timer_slack_guard& operator=(const timer_slack_guard&) = delete;

  /// For the progress thread, which sleeps only in wait(): set once, kept.
  static void set_for_this_thread();

private:
  long previous_ = -1;
};

class progress_waiter {
public:
  /// After activity, poll without sleeping this long (after the first
  /// fifth, yielding the core between polls): a reply to a write usually
  /// comes within microseconds, and a sleep costs a wake-up of tens of
  /// microseconds.
  static constexpr int64_t spin_ns = 50'000;
  static constexpr int64_t first_sleep_ns = 2'000;
  /// Longest back-off sleep while polling (no CQ descriptor). Measured here
  /// (docs/transport.md): 8 idle shm hosts cost ~0.5% of one core in sum.
  static constexpr int64_t max_sleep_ns = 4'000'000;
  /// Even with a descriptor, wake this often: a missed provider signal
  /// costs at most this much latency, not a hang. (At 100 ms the wake-ups
  /// alone were most of an idle local-64's CPU on a VM, where a futex
  /// syscall costs tens of microseconds.)
  static constexpr int64_t max_block_ns = 1'000'000'000;

  static caf::expected<progress_waiter> create();
  progress_waiter() = default;
  progress_waiter(progress_waiter&& o) noexcept;
  progress_waiter& operator=(progress_waiter&& o) noexcept;
  progress_waiter(const progress_waiter&) = delete;
  progress_waiter& operator=(const progress_waiter&) = delete;
  ~progress_waiter();

  /// Thread-safe: makes the current or next sleep() return at once.
  void notify();

  /// Something happened: spin again, then the sleeps start short again.
  void activity();

  /// With a doorbell (no CQ descriptor, peers on this machine) every sleep
  /// is a FUTEX_WAIT on it and notify() rings it; the eventfd is unused.
  void use_doorbell(doorbell* own) { bell_ = own; }

  /// Sleeps at most `limit_ns`, returning early on notify(), when `cq_fd`
  /// (>= 0) becomes readable, or when the doorbell rings. `may_block`: no
  /// completion can be due without a signal (fi_trywait said so for a
  /// descriptor; no local completion outstanding for a doorbell) — else
  /// only the back-off sleep is taken. `recheck` polls the CQ once after a
  /// doorbell sleep was announced (true: work arrived, do not sleep).
  /// Returns true when notify() was called since the last sleep.
  bool sleep(int cq_fd, bool may_block, int64_t limit_ns,
             const std::function<bool()>& recheck);

  /// Sleeps taken and their total requested length, for the idle-cost
  /// measurement (docs/transport.md).
  uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

private:
  int event_fd_ = -1;
  doorbell* bell_ = nullptr;
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> notified_{false};
  int64_t active_ns_ = 0; // monotonic time of the last activity
  int64_t sleep_ns_ = first_sleep_ns;
  std::atomic<uint64_t> sleeps_{0}; // read by counters() on any thread
};

} // namespace lockstep::transport::detail
