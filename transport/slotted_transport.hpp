#pragma once

// The slotted transport for ONE blocking caller per host: a thin adapter
// over host_transport that owns the chips' send and receive arenas
// (anonymous memory, framing written once at load), drives progress inside
// its own calls and turns the event stream back into blocking
// send/receive/release per (link, slot). Tests, the benchmark and tools
// that run a slot table from one thread use it; actors use host_transport.
//
// Usage per step k (any interleaving that follows the slot order):
//   auto buf = t->send_buffer(link, slot);   // payload bytes, in place
//   fill(*buf); t->send(link, slot, k, buf->size());
//   auto in = t->receive(link2, slot2, k);   // payload, read in place
//   ...consume...; t->release(k);            // buffers of step k reusable
//
// Thread-safety: none. One thread owns the object; libfabric progress
// happens inside these calls, so a host that computes for long stretches
// should call progress() now and then.

#include "transport/host_transport.hpp"
#include "transport/payload_frame.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace lockstep::transport {

namespace detail {
class mapped_buffer;
}

class slotted_transport {
public:
  /// Allocates and registers the arenas of this host's chips, writes the
  /// framing of every transfer this host sends, and opens a host_transport
  /// over them (hellos through `rv`; paced: clock alignment).
  static caf::expected<std::unique_ptr<slotted_transport>>
  create(const transport_options& opts, slot_program program, rendezvous& rv);

  ~slotted_transport();
  slotted_transport(const slotted_transport&) = delete;
  slotted_transport& operator=(const slotted_transport&) = delete;

  const slot_program& program() const { return t_->program(); }
  uint32_t host() const { return t_->host(); }
  const transport_settings& settings() const { return t_->settings(); }
  /// The transport underneath (counters, clock, raw access).
  host_transport& transport() { return *t_; }

  /// Payload bytes of the transfer (link, slot) in the registered send
  /// buffer; waits until earlier writes of that window completed locally.
  /// Errors: unscheduled_send if not in the table or not sent by this host.
  caf::expected<std::span<std::byte>> send_buffer(uint32_t link, uint32_t slot);

  /// Starts the write of (link, slot) for `step`. Refuses (unscheduled_send,
  /// wrong_size) anything the table does not list for this link and slot.
  /// Blocks (progressing) until the write left: while the receiver still
  /// holds the target buffer (back-pressure) and, paced, until the slot.
  caf::error send(uint32_t link, uint32_t slot, uint64_t step,
                  uint64_t payload_bytes);

  /// Waits for (link, slot) of `step` to arrive and returns its payload,
  /// read in place from the receive arena. Valid until release(step).
  /// Paced: arrivals after the slot's deadline count as misses; none by
  /// deadline + hard timeout gives slot_timeout (logical: from the call).
  caf::expected<std::span<const std::byte>>
  receive(uint32_t link, uint32_t slot, uint64_t step);

  /// Non-blocking receive: progresses once; an empty optional means "not
  /// yet". Paced: slot_timeout once the hard timeout after the deadline
  /// has passed.
  caf::expected<std::optional<std::span<const std::byte>>>
  try_receive(uint32_t link, uint32_t slot, uint64_t step);

  /// Hands this host's receive buffers of `step` (every chip) back to their
  /// senders. REQUIRES: every transfer of `step` into this host was
  /// consumed.
  caf::error release(uint64_t step);

  /// Progresses once (reads completions, sends queued control writes).
  caf::error progress();

  /// Drains outstanding writes and runs the goodbye barrier. Idempotent.
  caf::error close(std::chrono::nanoseconds timeout = std::chrono::seconds(30));

  link_counters counters(uint32_t link) const { return t_->counters(link); }
  clock_report clock() const { return t_->clock(); }
  int64_t now_ns() const { return t_->now_ns(); }
  static constexpr size_t max_lateness_samples =
      host_transport::max_lateness_samples;
  std::vector<int64_t> lateness_samples() const {
    return t_->lateness_samples();
  }
  const std::string& provider_name() const { return t_->provider_name(); }
  int64_t released_through(uint32_t link) const {
    return t_->released_through(link);
  }

  /// Raw access for the benchmark's baseline (see host_transport).
  using raw_target = host_transport::raw_target;
  caf::error absorb_completion(const fi_cq_data_entry& e) {
    return t_->absorb_completion(e);
  }
  uint64_t raw_local_completions() const { return t_->raw_local_completions(); }
  uint64_t raw_remote_completions() const {
    return t_->raw_remote_completions();
  }
  raw_target raw_target_of(chip_ref dst) const {
    return t_->raw_target_of(dst);
  }
  std::byte* raw_send_base(chip_ref src) const;
  void* raw_send_desc(chip_ref src) const { return t_->raw_send_desc(src); }
  detail::fabric_context& raw_fabric() const { return t_->raw_fabric(); }

private:
  struct chip_memory;
  struct out_info {
    std::span<std::byte> payload;
    int64_t posted = -1; // last step handed to send()
    int64_t done = -1;   // last step whose write completed (or failed)
    std::vector<uint32_t> window_users; // transfers sharing the window
  };
  struct in_info {
    const std::byte* arena = nullptr;
    std::vector<uint64_t> arrived; // steps arrived, not yet consumed
  };

  slotted_transport();
  caf::expected<uint32_t> lookup(uint32_t link, uint32_t slot,
                                 bool outbound) const;
  caf::error pump(std::chrono::nanoseconds timeout);
  caf::error wait_window(uint32_t transfer);
  caf::expected<std::span<const std::byte>>
  consume(uint32_t transfer, size_t arrival, uint64_t step);
  std::optional<caf::error> error_of(uint32_t transfer, uint64_t step);

  std::vector<std::unique_ptr<chip_memory>> memory_;
  std::unique_ptr<host_transport> t_; // after memory_: closed before it
  std::vector<out_info> out_;         // by transfer
  std::vector<in_info> in_;           // by transfer
  std::map<std::pair<uint32_t, uint64_t>, caf::error> errors_;
  std::vector<transport_event> events_;
  caf::error async_error_;
};

} // namespace lockstep::transport
