#pragma once

// Control messages (control.capnp, slot_table.capnp): start-up only. Every
// received control message is size-checked, copied to aligned memory and
// read with traversal and nesting limits; corrupt or oversized input gives
// errc::bad_control_message naming what was being read.

#include "transport/errc.hpp"
#include "transport/transport_settings.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lockstep::transport {

/// An aligned copy of one flat control message and a limited reader over it.
class control_reader {
public:
  /// `what` names the message in errors ("slot table", "hello of host 3").
  static caf::expected<control_reader> open(std::span<const std::byte> bytes,
                                            size_t max_bytes,
                                            const std::string& what);

  capnp::MessageReader& reader() { return *reader_; }

private:
  std::vector<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

/// A flat copy of a built message.
std::vector<std::byte> to_bytes(capnp::MessageBuilder& builder);

struct arena_key {
  uint32_t chip = 0;
  uint64_t remote_base = 0;
  uint64_t key = 0;
  uint64_t bytes = 0;
};

/// What a host publishes at start-up.
struct host_hello {
  static constexpr size_t max_message_bytes = size_t{1} << 20;
  uint32_t host = 0;
  std::string provider;
  uint64_t table_digest = 0;
  std::vector<std::byte> fabric_address;
  std::vector<arena_key> arenas;
  uint64_t mailbox_base = 0;
  uint64_t mailbox_key = 0;
  uint64_t mailbox_bytes = 0;
  slot_mode mode = slot_mode::logical; // every host runs one slot clock
  uint64_t slot_ns = 0;                // paced slot length
  std::string doorbell;                // detail/doorbell.hpp; may be empty
};

std::vector<std::byte> encode(const host_hello& hello);

/// Decodes and checks a hello (version, address size, arena count).
caf::expected<host_hello> decode_hello(std::span<const std::byte> bytes,
                                       const std::string& what);

} // namespace lockstep::transport
