#pragma once

// How host processes find each other at start-up (out of band, before the
// fabric is usable): every host publishes its HostHello control message and
// fetches everyone else's. The transport only needs this interface; the host
// actor layer may implement it over its own control channel.

#include "transport/errc.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace lockstep::transport {

class rendezvous {
public:
  virtual ~rendezvous();
  /// Makes `message` available to every other host under `host`.
  virtual caf::expected<void> publish(uint32_t host,
                                      std::span<const std::byte> message) = 0;
  /// Returns what `host` published, waiting up to `timeout`.
  virtual caf::expected<std::vector<std::byte>>
  fetch(uint32_t host, std::chrono::nanoseconds timeout) = 0;
};

/// A directory on a file system all hosts see (local /tmp for processes on
/// one machine; a shared mount across machines). Host h writes
/// `<dir>/host-<h>.hello` atomically (write to a temporary name, rename);
/// readers poll for the file. The directory's creator removes it after every
/// transport is up (the files are not needed afterwards).
class file_rendezvous final : public rendezvous {
public:
  explicit file_rendezvous(std::filesystem::path dir);
  caf::expected<void> publish(uint32_t host,
                              std::span<const std::byte> message) override;
  caf::expected<std::vector<std::byte>>
  fetch(uint32_t host, std::chrono::nanoseconds timeout) override;

private:
  std::filesystem::path dir_;
};

} // namespace lockstep::transport
