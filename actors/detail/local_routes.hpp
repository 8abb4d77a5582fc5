#pragma once

// Sends of one host's chips (and of the sampler on the head): a transfer to
// a chip of the same host is copied into the receiver's window at once by
// the transport (host_transport::send_or_deliver) and its arrival told to
// the receiving actor directly, as an actor message from the sender. No
// progress thread and no thread wake-up stand between two chips of a host;
// a transfer to another host is queued for the progress thread as always.
//
// Ownership: the table holds the receiving actors; every actor holding the
// table drops it when it exits (on_exit), so no reference cycle outlives
// the host.

#include "actors/messages.hpp"

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace lockstep::transport {
class host_transport;
}

namespace lockstep::actors::detail {

struct local_routes {
  /// The program whose transfers these are (arrivals say so).
  planner::program_kind kind = planner::program_kind::decode;
  /// By plan transfer id: the slot table's index of the transfer.
  std::vector<uint32_t> slot_index;
  /// By slot-table transfer index: the actor of the receiving chip when it
  /// is on this host (null otherwise).
  std::vector<caf::actor> receiver;
};

/// Sends plan transfer `transfer` of `step` from `self`'s chip. REQUIRES:
/// `self` is the running actor (the arrival is sent from it, so it is
/// queued behind the sender without waking another thread).
caf::error send_transfer(caf::event_based_actor* self,
                         transport::host_transport& transport,
                         const local_routes& routes, uint32_t transfer,
                         uint64_t step);

} // namespace lockstep::actors::detail
