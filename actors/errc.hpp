#pragma once

// Errors of the actors layer: executing a node's program (the executor the
// chip actors and the in-process simulation share), and later the actors.

#include "common/error.hpp"

#include <caf/atom.hpp>

#include <cstdint>

namespace lockstep::actors {

enum class errc : uint8_t {
  bad_program = 1,  // a node's program contradicts the model or its SRAM
                    // (names chip, op, slot and the operand)
  missing_input,    // an op's input was not delivered or written this step
  compute_failed,   // the model math refused its inputs (row table, shards)
  too_large,        // the simulation needs more memory than this machine has
  bad_request,      // a generation request the plan cannot serve
  disconnected,     // a control connection is gone (peer, address)
  bad_message,      // a corrupt, oversized or unexpected control message
  refused,          // the cluster refused: wrong token, config or version
  cluster_failed,   // a host's setup or run failed (names the host)
  timed_out,        // no answer within the stated time (names what)
  overloaded,       // the admission queue is full: back off and retry
};

const char* to_string(errc code);
error_kind kind_of(errc code);

inline const bool errc_registered =
  register_errc<errc>(caf::atom("actors"));

} // namespace lockstep::actors

CAF_ERROR_CODE_ENUM(lockstep::actors::errc, "actors")
