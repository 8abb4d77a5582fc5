#pragma once

// The time-slotted transport: executes one host's part of a slot table over
// libfabric. A transfer scheduled on link L at slot S is one RMA write of
// exactly the planned bytes from the sender chip's registered send arena to
// the planned offset of the receiver chip's registered receive arena, with
// the 64-bit slot id (link, absolute slot) as remote CQ data so the receiver
// sees it complete. No header, tag or sequence number travels with the data.
//
// Usage per step k (any interleaving that follows the slot order):
//   auto buf = t->send_buffer(link, slot);   // payload bytes, in place
//   fill(*buf); t->send(link, slot, k, buf->size());
//   auto in = t->receive(link2, slot2, k);   // payload, read in place
//   ...consume...; t->release(k);            // buffers of step k reusable
//
// Thread-safety: none. One thread (the host's transport actor) owns the
// object; libfabric progress is manual and happens inside these calls, so a
// host that computes for long stretches should call progress() now and then.

#include "transport/detail/fabric.hpp"
#include "transport/errc.hpp"
#include "transport/payload_frame.hpp"
#include "transport/rendezvous.hpp"
#include "transport/slot_program.hpp"
#include "transport/transport_settings.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace lockstep::transport {

/// Per-link counters, kept by the host at each end (sender fields on the
/// source host, receiver fields on the destination host).
struct link_counters {
  uint64_t bytes_sent = 0;
  uint64_t transfers_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t transfers_received = 0;
  uint64_t slots_used = 0;     // slots of received transfers
  uint64_t slot_misses = 0;    // paced: completions after their deadline
  int64_t max_lateness_ns = 0; // paced: worst completion - deadline (>= 0)
};

/// Result of the paced-mode clock alignment with host 0.
struct clock_report {
  int64_t offset_ns = 0; // host 0's clock minus this host's (estimate)
  uint64_t error_ns = 0; // bound: half the best round trip
  uint32_t rounds = 0;
  int64_t epoch_ns = 0; // slot 0 of step 0 on this host's clock
};

struct transport_options {
  uint32_t host = 0;
  transport_settings settings;
  /// Test hook: added to this host's clock, as if its clock were off.
  int64_t clock_offset_ns = 0;
  std::chrono::nanoseconds startup_timeout = std::chrono::seconds(30);
};

class slotted_transport {
public:
  /// Opens the provider, registers arenas, writes the framing of every
  /// transfer this host sends, exchanges hellos through `rv`, and in paced
  /// mode aligns the slot epoch with host 0 over the fabric.
  static caf::expected<std::unique_ptr<slotted_transport>>
  create(const transport_options& opts, slot_program program, rendezvous& rv);

  ~slotted_transport();
  slotted_transport(const slotted_transport&) = delete;
  slotted_transport& operator=(const slotted_transport&) = delete;

  const slot_program& program() const { return program_; }
  uint32_t host() const { return host_; }
  const transport_settings& settings() const { return settings_; }

  /// Payload bytes of the transfer (link, slot) in the registered send
  /// buffer; waits until the previous step's write of it completed locally.
  /// Errors: unscheduled_send if not in the table or not sent by this host.
  caf::expected<std::span<std::byte>> send_buffer(uint32_t link, uint32_t slot);

  /// Starts the write of (link, slot) for `step`. Refuses (unscheduled_send,
  /// wrong_size) anything the table does not list for this link and slot.
  /// Blocks (progressing) while the receiver still holds the target buffer
  /// (back-pressure) and, in paced mode, until the slot starts.
  caf::error send(uint32_t link, uint32_t slot, uint64_t step,
                  uint64_t payload_bytes);

  /// Waits for (link, slot) of `step` to complete and returns its payload,
  /// read in place from the receive arena. Valid until release(step).
  /// Paced: completions after the slot's deadline count as misses; none by
  /// deadline + hard timeout gives slot_timeout (logical: from the call).
  caf::expected<std::span<const std::byte>>
  receive(uint32_t link, uint32_t slot, uint64_t step);

  /// Non-blocking receive for event-driven callers (the host actor): polls
  /// once; an empty optional means "not yet". Paced: slot_timeout once the
  /// hard timeout after the deadline has passed.
  caf::expected<std::optional<std::span<const std::byte>>>
  try_receive(uint32_t link, uint32_t slot, uint64_t step);

  /// Hands this host's receive buffers of `step` back to their senders.
  /// REQUIRES: every transfer of `step` into this host was consumed.
  caf::error release(uint64_t step);

  /// Polls the completion queue once and sends queued control writes.
  caf::error progress();

  /// Drains outstanding writes and runs a goodbye barrier with every peer so
  /// no endpoint closes while another still needs it. Peers may still be
  /// running their programs, so the barrier waits up to `timeout`.
  /// Idempotent.
  caf::error close(std::chrono::nanoseconds timeout = std::chrono::seconds(30));

  const link_counters& counters(uint32_t link) const {
    return link_counters_[link];
  }
  const clock_report& clock() const { return clock_; }
  /// This host's clock (CLOCK_MONOTONIC + injected offset), ns.
  int64_t now_ns() const;
  /// Paced: completion minus deadline of every received transfer, ns.
  /// The most recent max_lateness_samples of them, in no particular order
  /// (a ring, so a long-running host's memory stays bounded).
  static constexpr size_t max_lateness_samples = size_t{1} << 16;
  const std::vector<int64_t>& lateness_samples() const { return lateness_; }
  /// The provider libfabric picked.
  const std::string& provider_name() const { return fabric_->provider_name(); }

  /// Last step the receiver of outbound `link` released (-1: none yet).
  int64_t released_through(uint32_t link) const {
    return released_through_[link];
  }

  /// Raw access for the benchmark's baseline (same endpoint, no slot logic).
  /// A raw loop posts writes with a null op context and remote CQ data of
  /// kind 3 (cq_data::kind::raw), reads the CQ itself and hands every entry
  /// to absorb_completion, which counts raw ones (whoever polled them).
  caf::error absorb_completion(const fi_cq_data_entry& e);
  uint64_t raw_local_completions() const { return raw_local_; }
  uint64_t raw_remote_completions() const { return raw_remote_; }
  struct raw_target {
    fi_addr_t addr;
    uint64_t remote_base; // add offsets to this
    uint64_t key;
  };
  raw_target raw_target_of(chip_ref dst) const;
  std::byte* raw_send_base(chip_ref src) const;
  void* raw_send_desc(chip_ref src) const;
  detail::fabric_context& raw_fabric() const { return *fabric_; }

private:
  struct peer;
  struct local_arena;
  struct out_state;
  struct in_state;
  struct control_write {
    uint32_t host;
    uint64_t data;
  };

  slotted_transport();
  caf::error setup(const transport_options& opts, rendezvous& rv);
  caf::error sync_clocks();
  caf::error poll_cq();
  caf::error dispatch_remote(uint64_t data);
  caf::error flush_control();
  caf::error post_control(uint32_t host, uint64_t data);
  caf::error drain(std::chrono::nanoseconds timeout);
  template <class Pred>
  caf::error progress_until(Pred&& done, int64_t deadline_ns,
                            const std::function<caf::error()>& on_timeout);
  caf::expected<const transfer_plan*> lookup(uint32_t link, uint32_t slot,
                                             bool outbound) const;
  int64_t slot_start_ns(uint64_t step, uint32_t slot) const;
  caf::expected<std::span<const std::byte>>
  consume(const transfer_plan& tp, in_state& in, size_t arrival, uint64_t step);

  transport_settings settings_;
  uint32_t host_ = 0;
  int64_t clock_offset_ns_ = 0;
  slot_program program_;
  // Declared before the memory regions so it is destroyed after them.
  std::unique_ptr<detail::fabric_context> fabric_;
  std::vector<local_arena> send_arenas_; // by local chip index
  std::vector<local_arena> recv_arenas_;
  std::unique_ptr<detail::mapped_buffer> mailbox_;
  detail::memory_region mailbox_mr_;
  std::vector<peer> peers_;    // by host
  std::vector<out_state> out_; // by transfer (used for this host's sends)
  std::vector<in_state> in_;   // by transfer (used for this host's receives)
  std::vector<int64_t> released_through_; // by link: last released step
  std::vector<link_counters> link_counters_;
  std::vector<uint32_t> inbound_links_;
  std::deque<control_write> control_queue_;
  caf::error async_error_;
  uint64_t outstanding_ = 0;
  clock_report clock_;
  std::vector<int64_t> lateness_;
  size_t lateness_next_ = 0; // ring position once lateness_ is full
  // Clock alignment and goodbye state, filled by dispatch_remote.
  bool pong_seen_ = false;
  uint64_t pong_value_ = 0;
  uint32_t sync_done_ = 0;
  bool epoch_seen_ = false;
  uint64_t epoch_value_ = 0;
  uint32_t byes_ = 0;
  bool closed_ = false;
  uint64_t raw_local_ = 0;
  uint64_t raw_remote_ = 0;
};

} // namespace lockstep::transport
