#pragma once

// Test harness: drives one host's host_transport the way the actors will —
// the calling thread is the progress thread (wait() and dispatch), and one
// worker thread per chip of the host runs that chip's slot program: it
// waits for each input's arrival event, checks the payload in place in its
// receive window, writes the next outputs (framing and payload) into its
// send windows once their previous writes completed, posts them, and
// releases its receive windows after each step. The chips' memory is one
// region per chip, [send arena | receive arena], as in a chip's SRAM.

#include "transport/detail/fabric.hpp"
#include "transport/host_transport.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

namespace lockstep::transport::test {

/// The chips' memory of one host, owned by the test.
class host_memory {
public:
  static host_memory allocate(const slot_program& program, uint32_t host);
  std::vector<arena_memory> arenas() const { return arenas_; }

private:
  std::vector<std::shared_ptr<detail::mapped_buffer>> regions_;
  std::vector<arena_memory> arenas_;
};

/// One host of a test cluster, opened as a child process opens it: the
/// table loaded, the chips' memory allocated, the transport created through
/// a file rendezvous in `dir` (opts.host names the host).
struct opened_host {
  host_memory memory; // declared first: outlives the transport
  caf::expected<std::unique_ptr<host_transport>> transport;
};
opened_host open_host(const std::vector<std::byte>& table,
                      const transport_options& opts,
                      const std::filesystem::path& dir);

struct threaded_hooks {
  /// Post this send that much after its slot start (paced), from a helper
  /// thread, so the chip's other work stays on time (0: no delay).
  std::function<int64_t(uint64_t step, uint32_t transfer)> delay_ns;
  /// Do not send this transfer in this step (a missing delivery).
  std::function<bool(uint64_t step, uint32_t transfer)> skip_send;
  /// Relay: instead of writing a payload, forward this received transfer
  /// (same step) out of its receive window (post_forward).
  std::function<int64_t(uint32_t transfer)> forward_of;
  /// The payload pattern a received transfer carries (default: its send
  /// window's, window_key); a relayed transfer carries its source's.
  std::function<uint32_t(uint32_t transfer)> pattern_of;
  /// Each event as the progress thread sees it.
  std::function<void(const transport_event&)> on_event;
  std::function<void(host_transport&, const transport_event&)> on_event_with;
  /// Error events the run tolerates (the test inspects them itself).
  std::function<bool(const transport_event&)> expected_error;
  std::chrono::seconds timeout{60};
};

/// Runs `steps` steps of every chip of this host with verified payloads.
/// Returns the first failure (an unexpected error event, a wrong payload,
/// a timeout naming what was awaited).
caf::error run_threaded(host_transport& t, const host_memory& memory,
                        uint64_t steps, const threaded_hooks& hooks = {});

} // namespace lockstep::transport::test
