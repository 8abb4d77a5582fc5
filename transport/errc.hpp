#pragma once

// Errors of the transport layer. Every libfabric return code is wrapped once,
// at the boundary, into one of these, with fi_strerror text and the failed
// operation in the context.

#include "common/error.hpp"

#include <caf/atom.hpp>

#include <cstdint>

namespace lockstep::transport {

enum class errc : uint8_t {
  invalid_config = 1,  // a `transport:` setting is wrong (names the key)
  invalid_table,       // a slot table is malformed (names link/slot)
  unscheduled_send,    // a send not in the table for this link and slot
  wrong_size,          // a send of another size than the table says
  fabric_failure,      // a libfabric call failed (names the call)
  peer_unreachable,    // a peer's address could not be resolved/inserted
  slot_timeout,        // a delivery missed its hard deadline (link, slot)
  bad_control_message, // a corrupt or oversized control message
  back_pressure,       // the receiver has not released the buffer yet
  bad_payload,         // a received transfer's framing is not the planned one
  refused_arrival,     // a write the table does not schedule into this host
                       // (unknown link or slot, duplicate, stale or early
                       // step); names link, slot and step
};

const char* to_string(errc code);
error_kind kind_of(errc code);

inline const bool errc_registered = register_errc<errc>(caf::atom("transport"));

} // namespace lockstep::transport

CAF_ERROR_CODE_ENUM(lockstep::transport::errc, "transport")
