#pragma once

// Private state of host_transport shared by its implementation files
// (start-up and clock, progress, API). Not a public header.
//
// Ownership by thread: fields under "any thread" are atomics or guarded by
// a mutex; "progress thread" fields are touched only by wait()/close() (and
// by create() before any progress thread exists).

#include "transport/control_messages.hpp"
#include "transport/detail/clock_model.hpp"
#include "transport/detail/cq_data.hpp"
#include "transport/detail/doorbell.hpp"
#include "transport/detail/fabric.hpp"
#include "transport/detail/progress_waiter.hpp"
#include "transport/host_transport.hpp"

#include <array>
#include <atomic>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::transport {

namespace detail {

// Op contexts: 1 for control writes, 2 + transfer index for data writes
// (null: a raw write of the benchmark or a test).
inline constexpr uintptr_t control_context = 1;

inline void* data_context(uint32_t transfer) {
  return reinterpret_cast<void*>(uintptr_t{2} + transfer);
}

inline int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline std::string ns_text(int64_t ns) {
  return std::to_string(ns / 1000) + " us";
}

/// Counters of one link, written by the progress thread, read by anyone.
struct atomic_link_counters {
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> transfers_sent{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> transfers_received{0};
  std::atomic<uint64_t> slots_used{0};
  std::atomic<uint64_t> slot_misses{0};
  std::atomic<int64_t> max_lateness_ns{0};
  std::atomic<uint64_t> refused_unscheduled{0};
  std::atomic<uint64_t> refused_duplicate{0};
  std::atomic<uint64_t> refused_stale{0};
  std::atomic<uint64_t> refused_ahead{0};
  /// Sender side: last step the receiver released (credit).
  std::atomic<int64_t> peer_released{-1};
};

// Counters are written by the progress thread and, for transfers delivered
// in place (deliver path), by the sending chip's thread: an atomic add.
inline void bump(std::atomic<uint64_t>& c, uint64_t by = 1) {
  c.fetch_add(by, std::memory_order_relaxed);
}

} // namespace detail

struct host_transport::impl {
  // --- fixed after create -------------------------------------------------
  transport_settings settings;
  uint32_t host = 0;
  int64_t clock_offset_ns = 0;
  int64_t clock_drift_ppb = 0;
  int64_t send_delay_ns = 0; // test hook (transport_options)
  int64_t clock_base_ns = 0; // monotonic time of create (drift hook)
  int64_t resync_interval_ns = 1'000'000'000;
  slot_program program;
  uint64_t period_slots = 1;
  bool paced = false;
  // Declared before the memory regions so it is destroyed after them.
  std::unique_ptr<detail::fabric_context> fabric;

  struct local_arena {
    chip_ref chip;
    std::span<std::byte> send;
    std::span<std::byte> recv;
    detail::memory_region send_mr;
    detail::memory_region recv_mr;
    std::vector<uint32_t> inbound_links;
    // Every inbound link starts on this host (fixed after create): its
    // releases need no control write (host_transport::release).
    bool inbound_all_local = true;
    // Written by the progress thread under arrival_mutex (read there
    // freely; elsewhere under the mutex): last step released (applied).
    int64_t released = -1;
    // Progress thread:
    std::vector<uint64_t> forward_steps; // forwards out of recv, unfinished
  };
  std::vector<local_arena> arenas; // by local chip, table order

  detail::mapped_buffer mailbox;
  detail::memory_region mailbox_mr;

  struct peer {
    fi_addr_t addr = FI_ADDR_NOTAVAIL;
    uint64_t mailbox_base = 0;
    uint64_t mailbox_key = 0;
    // By chip id; a host endpoint's (host_endpoint_chip) too, so a map.
    std::map<uint32_t, arena_key> arenas;
  };
  std::vector<peer> peers; // by host

  // Providers without a CQ descriptor (shm): this host's doorbell and its
  // peers' (detail/doorbell.hpp). Empty when the CQ has a descriptor.
  detail::doorbell bell;
  std::vector<detail::doorbell> peer_bells; // by host; own slot empty

  struct out_state {
    bool ours = false;
    const std::byte* window = nullptr; // send window (registered)
    void* desc = nullptr;
    fi_addr_t dest = FI_ADDR_NOTAVAIL;
    uint32_t dest_host = 0;
    uint64_t remote_base = 0; // add dst_offset(step)
    uint64_t key = 0;
    size_t arena = 0; // local arena of the sending chip
    // Same host, logical mode: the receiver's receive arena, where
    // send_or_deliver copies the window in place (null: over the fabric).
    std::byte* local_recv = nullptr;
    // Guarded by inbox_mutex: refuses a second post of one step.
    int64_t last_requested = -1;
    // Progress thread:
    bool in_flight = false;
    uint64_t flight_step = 0;
    int64_t flight_forward = -1; // source transfer of a forward in flight
    uint32_t scan = 0;           // pending-scan generation (FIFO per transfer)
    // Any thread:
    std::atomic<int64_t> last_posted{-1};
  };
  std::unique_ptr<out_state[]> out; // by transfer

  struct in_state {
    bool ours = false;
    size_t arena = 0; // local arena of the receiving chip
    // Under arrival_mutex: the step each receive buffer last received.
    std::array<int64_t, slot_program::max_buffers> arrived;
    int64_t arrived_through = -1;   // every step <= this has arrived
    // Progress thread:
    int64_t timed_out_through = -1; // missing deliveries reported
  };
  std::vector<in_state> in;      // by transfer
  std::vector<uint32_t> inbound; // transfers into this host

  std::unique_ptr<detail::atomic_link_counters[]> links; // by link

  // --- any thread ---------------------------------------------------------
  struct send_request {
    uint32_t transfer = 0;
    uint64_t step = 0;
    int64_t forward_from = -1; // post_forward: the received transfer
    int64_t queued_ns = 0;     // progress thread: when it entered pending
    int64_t refused_ns = 0;    // progress thread: first -FI_EAGAIN
  };
  std::mutex inbox_mutex;
  std::vector<send_request> send_inbox;
  // Delivered in place by a sender's thread, for the progress thread's
  // bookkeeping of active steps (no event is made for them).
  std::vector<std::pair<uint32_t, uint64_t>> delivered_inbox;
  // Arrival state (in_state::arrived*, local_arena::released): written by
  // the progress thread (fabric arrivals, releases) and by senders
  // delivering in place.
  std::mutex arrival_mutex;
  std::vector<std::pair<size_t, uint64_t>> release_inbox; // (arena, step)
  std::atomic<bool> wake_requested{false};
  // A post_forward was ever requested: releases must then wait for
  // forwards out of the window (the progress thread's forward_steps).
  std::atomic<bool> forwards_requested{false};
  std::atomic<bool> accepting{true}; // false once close() began
  detail::progress_waiter waiter;

  mutable std::mutex stats_mutex; // lateness ring, clock model copy
  std::vector<int64_t> lateness;
  size_t lateness_next = 0;
  detail::clock_model shared_clock; // what other threads read
  int64_t epoch_ref_ns = 0;         // slot 0 of step 0 on host 0's clock
  // Paced, after resume_at(): steps >= step start at ref_ns (host 0's
  // clock), one period apart. `origin` is the progress thread's,
  // `shared_origin` (under stats_mutex) everyone else's, `origin_inbox`
  // (under inbox_mutex) one not yet applied.
  struct step_origin {
    uint64_t step = 0;
    int64_t ref_ns = INT64_MIN; // none: the epoch's mapping
  };
  step_origin origin;
  step_origin shared_origin;
  std::optional<step_origin> origin_inbox;
  uint32_t clock_rounds = 0;        // published copy of `rounds`
  std::atomic<uint64_t> refused_unknown_link{0};
  std::atomic<uint64_t> resyncs{0};
  std::atomic<uint64_t> raw_local{0};
  std::atomic<uint64_t> raw_remote{0};

  // --- progress thread ----------------------------------------------------
  std::vector<send_request> pending; // queued sends, in posting order
  uint32_t scan_generation = 0;
  struct control_write {
    uint32_t host;
    uint64_t data;
  };
  std::deque<control_write> control_queue;
  std::vector<std::pair<size_t, uint64_t>> deferred_releases;
  uint64_t outstanding = 0; // posted writes whose local completion is due
  // Doorbells to ring after this pass: hosts we wrote to (so they look),
  // whose writes we consumed (their local completion is due), and with
  // writes of ours outstanding (a multi-step protocol needs them awake).
  std::vector<uint8_t> ring_pending;    // by host
  std::vector<uint32_t> outstanding_to; // by host
  std::vector<transport_event> events;
  caf::error fatal;
  bool closing = false;
  bool closed = false;
  bool posted_any = false; // the last pass handed a queued send to libfabric
  // The last pass had a write refused with FI_EAGAIN: only the provider's
  // progress (ours and the peer's) frees it, and no peer rings us for that.
  bool fabric_refused = false;
  // The last pass kept a send on a same-host link waiting for its credit.
  bool credit_from_local = false;

  // Steps this host is active in (sent or received something of): missing
  // deliveries are looked for only there, so a stopped program does not
  // produce timeouts for steps nobody runs.
  int64_t horizon = -1;
  static constexpr size_t first_seen_ring = 64;
  std::array<std::pair<int64_t, int64_t>, first_seen_ring> first_seen{};
  int64_t next_timeout_check_ns = 0;

  // Clock (paced): the progress thread's model and the ping in flight.
  static constexpr uint32_t startup_rounds = 24;
  static constexpr uint32_t burst_rounds = 4;
  static constexpr int64_t first_resync_gap_ns = 50'000'000;
  /// A re-sync pong later than this is given up (host 0 busy or asleep);
  /// the burst is retried at the next interval.
  static constexpr int64_t ping_timeout_ns = 200'000'000;
  /// Polling without a CQ descriptor: the sleep while an arrival is due.
  static constexpr int64_t eager_poll_ns = 20'000;
  /// Paced: something due sooner than this is polled for, not slept for
  /// (a futex or timer wake-up takes tens of microseconds here).
  static constexpr int64_t spin_ahead_ns = 50'000;
  detail::clock_model clock;
  bool synced = false; // start-up alignment done (hosts > 0)
  bool ping_out = false;
  uint16_t ping_seq = 0;
  int64_t ping_t1 = 0;
  uint32_t burst_left = 0;
  uint32_t rounds = 0; // ping/pong rounds so far
  detail::clock_sample burst_best{};
  int64_t next_resync_ns = 0;
  int64_t resync_gap_ns = 0;
  bool pong_seen = false;
  uint64_t pong_value = 0;
  uint32_t sync_done = 0;
  bool epoch_seen = false;
  uint64_t epoch_value = 0;
  uint32_t byes = 0;
  uint32_t hellos = 0; // peers that said hello (connect)

  // --- helpers (host_transport.cpp / _progress.cpp / _clock.cpp) ----------
  int64_t now_ns() const;
  int64_t slot_ref_ns(uint64_t step, uint32_t slot) const; // host 0 clock
  int64_t slot_ref_ns(uint64_t step, uint32_t slot,
                      const step_origin& o) const;
  int64_t local_slot_start(uint64_t step, uint32_t slot) const; // progress
  std::string where(uint32_t transfer) const;                // "link X slot S"
  std::string where(uint32_t transfer, uint64_t step) const; // "... step k"
  void error_event(uint32_t transfer, uint32_t link, uint64_t step,
                   caf::error err);

  caf::error setup(const transport_options& opts, rendezvous& rv,
                   std::vector<arena_memory> memory);
  caf::error connect();     // create(): a first write to every peer
  caf::error sync_clocks(); // create(): initial alignment
  void resync_step(int64_t now);
  void on_pong(uint64_t value, bool resync, int64_t now);

  /// One pass: inbox, CQ, releases, posting, control writes, clock and
  /// timeouts. Returns true when anything happened (the back-off resets).
  caf::expected<bool> progress_once();
  /// Sleeps up to `limit_ns` (bounded by the next thing due).
  void idle(int64_t limit_ns);
  void ring_peers();
  caf::error progress_until(const std::function<bool()>& done,
                            int64_t deadline_ns,
                            const std::function<caf::error()>& on_timeout);
  caf::error poll_cq(bool& any);
  /// Receiver-side enforcement and bookkeeping of one arrival of transfer
  /// `t` at `step` (fabric or in place): refused (counted, and the error
  /// returned) when stale, duplicate or ahead, else recorded and counted.
  /// Any thread; takes arrival_mutex.
  caf::error admit_arrival(uint32_t t, uint64_t step);
  caf::error absorb(const fi_cq_data_entry& e);
  caf::error dispatch_remote(uint64_t data, int64_t now);
  void on_data(uint32_t link, uint64_t abs_slot, int64_t now);
  caf::error flush_control();
  bool post_pending(int64_t now, bool& any);
  void apply_releases();
  void check_timeouts(int64_t now);
  void note_step(uint64_t step, int64_t now);
  int64_t first_seen_ns(uint64_t step) const;
  int64_t next_due_ns(int64_t now) const;
  void record_lateness(int64_t late);
};

} // namespace lockstep::transport
