#pragma once

// One TCP connection of the control plane (actors/control.capnp): Envelope
// messages in Cap'n Proto's stream framing, written by any thread (one at a
// time, under a lock) and read by one reader thread. And the head's
// listening socket.
//
// Cap'n Proto's own stream framing (writeMessageToFd; read whole into a
// FlatArrayMessageReader) over plain blocking sockets: the actors are the concurrency model, so a
// reader thread per connection hands messages to them; a KJ event loop for
// Cap'n Proto RPC would be a second concurrency model in every process.
// Every received message is read with traversal and nesting limits.

#include "actors/control.capnp.h"
#include "actors/errc.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lockstep::actors::detail {

/// A received message: owns all its words (read whole before it is handed
/// on: Cap'n Proto's stream reader would fetch later segments lazily, from
/// a socket another message is being read from by then); read it with
/// root().
class control_message {
public:
  control_message(std::vector<capnp::word> words,
                  const capnp::ReaderOptions& options);
  schema::Envelope::Reader root() { return reader_->getRoot<schema::Envelope>(); }

private:
  std::vector<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

class control_channel {
public:
  /// Largest message accepted (a plan for 1,500 chips is a few MB).
  static constexpr uint64_t max_message_words = uint64_t{64} << 20;

  /// Connects to "host:port", retrying until `timeout` (the head may still
  /// be starting). Errors: disconnected naming the address.
  static caf::expected<std::unique_ptr<control_channel>>
  connect(const std::string& address, std::chrono::milliseconds timeout);

  /// Takes an accepted socket.
  explicit control_channel(int fd, std::string peer);
  ~control_channel();
  control_channel(const control_channel&) = delete;
  control_channel& operator=(const control_channel&) = delete;

  /// Thread-safe. Errors: disconnected.
  caf::error send(capnp::MessageBuilder& message);

  /// Blocks until a whole message arrives. Errors: disconnected (peer gone
  /// or shutdown() called), bad_message (corrupt or too large).
  /// Thread-safety: one reader.
  caf::expected<control_message> receive();

  /// Like receive(), but waits at most `timeout` for a message to begin.
  /// Errors also: timed_out.
  caf::expected<control_message> receive(std::chrono::milliseconds timeout);

  /// Unblocks receive() and fails later sends. Thread-safe, idempotent.
  void shutdown();

  const std::string& peer() const noexcept { return peer_; }

private:
  int fd_;
  std::string peer_;
  std::mutex write_mutex_;
};

/// The head's listening socket on 127.0.0.1 (or the given address).
class control_listener {
public:
  /// "127.0.0.1:0" picks a free port. Errors: disconnected naming the
  /// address.
  static caf::expected<std::unique_ptr<control_listener>>
  listen(const std::string& address);
  ~control_listener();

  /// "127.0.0.1:40123": what others connect to.
  const std::string& address() const noexcept { return address_; }

  /// Blocks for the next connection; an error once closed.
  caf::expected<std::unique_ptr<control_channel>> accept();

  /// Unblocks accept(). Thread-safe, idempotent.
  void close();

private:
  control_listener(int fd, std::string address)
      : fd_(fd)
      , address_(std::move(address)) {}
  int fd_;
  std::string address_;
};

} // namespace lockstep::actors::detail
