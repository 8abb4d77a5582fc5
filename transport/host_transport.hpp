#pragma once

// The transport of one host process, made for actors: the chips' memory
// belongs to the caller (each chip actor's SRAM arena), any thread may post
// sends and releases, and one progress thread drives libfabric and receives
// what happened as events.
//
// A transfer scheduled on link L at slot S of step k is one RMA write of
// exactly the planned bytes from the sender chip's send window (payload and
// framing written there in place by the producer) to the planned receive
// window of step k's parity on the receiver chip, with the 64-bit slot id
// (link, absolute slot) as remote CQ data. Nothing else travels with it.
//
//   auto t = host_transport::create(opts, program, rv, arenas);   // caller
//   progress thread:  for (;;) { events.clear(); t->wait(events, 100ms);
//                                dispatch(events); }
//   chip actor:       write payload + framing into its send window;
//                     t->post_send(transfer, step);      // non-blocking
//                     ... arrival events: read the receive window in place
//                     t->release(chip, step);            // windows reusable
//
// Thread-safety: post_send, post_forward, release, wake, counters,
// clock, lateness_samples, last_posted_step, released_through: any thread.
// wait and close: the one progress thread (close also after it stopped).
// create and the destructor: not concurrently with anything (destroy only
// after the progress thread stopped); after close() began, posts and
// releases are refused. The first
// wait() sets the calling thread's timer slack to 1 us (prctl), so its
// sleeps end on time for the slot clock.

#include "transport/errc.hpp"
#include "transport/rendezvous.hpp"
#include "transport/slot_program.hpp"
#include "transport/transport_settings.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <rdma/fabric.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

struct fi_cq_data_entry;

namespace lockstep::transport {

namespace detail {
class fabric_context;
}

/// Memory the caller owns for one chip or host endpoint of this host: the
/// program's send arena (send_base .. + send_bytes of the chip's SRAM) and
/// receive arena. Both 8-byte aligned and at least as large as the table's
/// Arena entry; either may be empty when the table needs 0 bytes. They must
/// stay valid (and must not move) until the transport is destroyed.
struct arena_memory {
  chip_ref chip;
  std::span<std::byte> send;
  std::span<std::byte> recv;
};

/// What became of a send (host_transport::send_or_deliver).
enum class send_path : uint8_t {
  queued,    // the progress thread writes it; the receiver's wait() reports it
  delivered, // copied into the receiver's window already (same host)
};

struct transport_event {
  enum class kind : uint8_t {
    arrival,   // transfer of step arrived in its receive window (read it)
    send_done, // the send window of transfer may be rewritten
    released,  // the receiver of `link` released step (sender side)
    error,     // err names link, slot and step
  };
  /// `transfer` of events that concern a link rather than a transfer.
  static constexpr uint32_t no_transfer = 0xFFFFFFFFu;
  /// `link` of a refused arrival whose link index is not in the table.
  static constexpr uint32_t no_link = 0xFFFFFFFFu;

  kind what = kind::arrival;
  uint32_t transfer = no_transfer; // index into slot_program::transfers()
  uint32_t link = no_link;         // the transfer's link
  uint64_t step = 0;
  /// arrival: when the progress thread saw the completion, this host's
  /// clock (ns); paced lateness is measured against it.
  int64_t at_ns = 0;
  caf::error err; // kind::error only
};

/// Per-link counters, kept by the host at each end (sender fields on the
/// source host, receiver fields on the destination host).
struct link_counters {
  uint64_t bytes_sent = 0;
  uint64_t transfers_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t transfers_received = 0;
  uint64_t slots_used = 0;     // slots of received transfers
  uint64_t slot_misses = 0;    // paced: arrivals after their deadline
  int64_t max_lateness_ns = 0; // paced: worst arrival - deadline (>= 0)
  // Receiver-side enforcement: arrivals refused (reported as error events,
  // never as arrivals).
  uint64_t refused_unscheduled = 0; // no transfer on this link at that slot
  uint64_t refused_duplicate = 0;   // a second arrival of transfer and step
  uint64_t refused_stale = 0;       // a step this host already released
  uint64_t refused_ahead = 0;       // a step whose window an unreleased step
                                    // still holds (sender ignored credits)
};

/// Host-wide counters of what cannot be charged to a link of this host.
struct host_counters {
  uint64_t refused_unknown_link = 0; // data for a link not into this host
  uint64_t resyncs = 0;              // paced re-sync bursts completed
  uint64_t idle_sleeps = 0;          // progress-thread sleeps (idle cost)
};

/// Result of the paced-mode clock alignment with host 0.
struct clock_report {
  int64_t offset_ns = 0; // host 0's clock minus this host's, now
  uint64_t error_ns = 0; // bound: half the best round trip of the last sync
  int64_t drift_ppb = 0; // host 0's clock rate relative to this one - 1
  uint32_t rounds = 0;   // ping/pong rounds so far
  uint64_t resyncs = 0;  // periodic re-syncs so far
  int64_t epoch_ns = 0;  // slot 0 of step 0 on this host's clock, now
};

struct transport_options {
  uint32_t host = 0;
  transport_settings settings;
  /// Test hooks: this host's clock reads monotonic + offset + drift, the
  /// drift growing by clock_drift_ppb ns per second since create(), as if
  /// its clock were off and its crystal fast (> 0) or slow.
  int64_t clock_offset_ns = 0;
  int64_t clock_drift_ppb = 0;
  /// Test hook: every paced write of this host leaves this long after its
  /// slot starts (injected lateness: its receivers count slot misses).
  int64_t send_delay_ns = 0;
  std::chrono::nanoseconds startup_timeout = std::chrono::seconds(30);
  /// Paced: re-sync with host 0 this often (the first few sooner, so the
  /// drift estimate exists early); 0: never (start-up alignment only).
  std::chrono::nanoseconds resync_interval = std::chrono::seconds(1);
};

class host_transport {
public:
  /// Registers the caller's arenas in place (receive arenas for remote
  /// writes and, for forwarding, as write sources; send arenas as write
  /// sources), exchanges hellos through `rv` (refusing a peer that runs
  /// another provider, slot mode, slot length or table), and in paced mode
  /// aligns the slot clock with host 0 over the fabric. Writes nothing into
  /// the arenas. `arenas` has one entry per chip of this host in the table.
  static caf::expected<std::unique_ptr<host_transport>>
  create(const transport_options& opts, slot_program program, rendezvous& rv,
         std::vector<arena_memory> arenas);

  ~host_transport();
  host_transport(const host_transport&) = delete;
  host_transport& operator=(const host_transport&) = delete;

  const slot_program& program() const;
  uint32_t host() const;
  const transport_settings& settings() const;

  /// Queues the write of `transfer` for `step`; its send window already
  /// holds payload and framing and must not change until send_done. It
  /// leaves once the receiver released the window's previous use (step -
  /// buffers; back-pressure, both modes) and, paced, when its slot starts.
  /// Refuses (unscheduled_send) a transfer this host does not send or a
  /// step not after the last one posted for it. Non-blocking.
  caf::error post_send(uint32_t transfer, uint64_t step);

  /// Like post_send, but a transfer between two chips of this host in
  /// logical mode whose window the receiver has released is copied into
  /// the receiver's window at once, in the caller's thread, and admitted
  /// (the receiver-side checks and counters of an arrival): `delivered`.
  /// No event reports it; the caller tells the receiving chip. Anything
  /// else is `queued` as by post_send. Errors: post_send's, and a refused
  /// arrival (refused_arrival) for a delivery the receiver cannot take.
  caf::expected<send_path> send_or_deliver(uint32_t transfer, uint64_t step);

  /// Like post_send, but the bytes are read from the receive window of
  /// `received` (a transfer into the sending chip, same size) at `step`:
  /// a relay hop without a copy. The receive window stays unreleased until
  /// the write completed (a release of that chip and step waits for it).
  caf::error post_forward(uint32_t transfer, uint64_t step, uint32_t received);

  /// The receive windows of every transfer into `chip` for `step` and
  /// earlier steps may be reused; their senders are told. Non-blocking.
  /// Steps are released in order per chip (a lower step is a no-op).
  caf::error release(chip_ref chip, uint64_t step);

  /// Progress thread: drives libfabric, posts queued sends whose time has
  /// come, and appends to `out` what happened (arrivals into this host,
  /// local send completions, releases of outbound links, errors). Returns
  /// as soon as it has events or posted a queued send, on wake(), or after
  /// `timeout`; sleeps while idle (docs/transport.md: no busy-spinning). An error return is fatal
  /// (the fabric failed); per-transfer problems are error events.
  caf::error wait(std::vector<transport_event>& out,
                  std::chrono::nanoseconds timeout);

  /// Makes the progress thread's current or next wait() return.
  void wake();

  /// Drains queued and outstanding writes, then a goodbye barrier with
  /// every peer (so no endpoint closes while another still needs it).
  /// Events meanwhile are counted, not returned. Idempotent.
  caf::error close(std::chrono::nanoseconds timeout = std::chrono::seconds(30));

  link_counters counters(uint32_t link) const;
  host_counters counters() const;
  clock_report clock() const;
  /// This host's clock (CLOCK_MONOTONIC + injected offset and drift), ns.
  int64_t now_ns() const;
  /// Paced: start of `slot` of `step` on this host's clock, now.
  int64_t slot_start_ns(uint64_t step, uint32_t slot) const;

  /// Paced: step `step` and every later one start at `ref_ns` on host 0's
  /// clock (one step period apart) instead of where the epoch put them.
  /// The coordinator re-anchors the schedule so after the cluster idled:
  /// without it the first step after an idle spell lies in the past, and
  /// every transfer of it would count as a slot miss. Every host must apply
  /// the same (step, ref_ns) before its first send of `step` (the head
  /// picks ref_ns far enough ahead for its control message to arrive).
  /// Logical mode: a no-op. Thread-safe.
  caf::error resume_at(uint64_t step, int64_t ref_ns);
  /// Paced: arrival minus deadline of the most recent arrivals (up to
  /// max_lateness_samples, in no particular order).
  static constexpr size_t max_lateness_samples = size_t{1} << 16;
  std::vector<int64_t> lateness_samples() const;
  /// Last step of `transfer` handed to libfabric (-1: none yet).
  int64_t last_posted_step(uint32_t transfer) const;
  /// Last step the receiver of outbound `link` released (-1: none yet).
  int64_t released_through(uint32_t link) const;
  /// The provider libfabric picked; whether the progress thread blocks on
  /// a CQ descriptor (else on its doorbell, which peers ring; it polls with
  /// a back-off only while a local completion is due).
  const std::string& provider_name() const;
  bool blocking_waits() const;

  // --- raw access: the benchmark's baseline and the enforcement tests ---
  // A raw loop posts writes on raw_fabric().ep() from the progress thread
  // (null op context; remote CQ data of its choosing). wait() counts
  // completions of kind raw (cq_data) and raw local ones; a loop reading
  // the CQ itself hands every entry to absorb_completion.
  struct raw_target {
    fi_addr_t addr;
    uint64_t remote_base; // add offsets into the chip's receive arena
    uint64_t key;
  };
  raw_target raw_target_of(chip_ref dst) const;
  void* raw_send_desc(chip_ref src) const;
  detail::fabric_context& raw_fabric() const;
  caf::error absorb_completion(const fi_cq_data_entry& e);
  uint64_t raw_local_completions() const;
  uint64_t raw_remote_completions() const;

  struct impl;

private:
  explicit host_transport(std::unique_ptr<impl> p);
  caf::expected<send_path> send(uint32_t transfer, uint64_t step,
                                bool may_deliver);
  std::unique_ptr<impl> impl_;
};

} // namespace lockstep::transport
