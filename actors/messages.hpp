#pragma once

// Every message the actors of one process exchange (CAF 0.17). Actors talk
// only through these; what crosses processes is actors/control.capnp.
//
//   progress thread --arrived--> chip actor | coordinator (sampler endpoint)
//   reader threads  --control_in / closed--> host actor | coordinator
//   host actor      --sampler_ready--> coordinator (rank 0: the endpoint's
//                                      executor and the transport)
//   anyone          --failed--> host actor (the process must stop)

#include "actors/detail/control_channel.hpp"
#include "model/kernels.hpp"
#include "planner/plan.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lockstep::transport {
class host_transport;
}

namespace lockstep::actors {

class chip_executor;
class sram_arena;
namespace detail {
struct local_routes;
}

/// Transfer `transfer` (plan id in program `kind`) of that program's step
/// `step` has landed in its receive window.
struct arrived {
  uint32_t transfer = 0;
  uint64_t step = 0;
  planner::program_kind kind = planner::program_kind::decode;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, arrived& x) {
  return f(caf::meta::type_name("arrived"), x.transfer, x.step, x.kind);
}

/// A control message from connection `connection` (the host's head link is
/// connection 0).
struct control_in {
  uint64_t connection = 0;
  std::shared_ptr<detail::control_message> message;
};

/// Connection `connection` is gone (`why`).
struct closed {
  uint64_t connection = 0;
  std::string why;
};

/// Something this process cannot recover from: stop, saying why.
struct failed {
  std::string why;
};

/// The transport a program's transfers travel on, and how a host's sends of
/// it reach their receivers. Each program has its own slot table, hence its
/// own transport; prefill's is null when the cluster feeds prompts through
/// decode (actors/detail/programs.hpp).
struct program_lane {
  std::shared_ptr<transport::host_transport> transport;
  std::shared_ptr<const detail::local_routes> routes;
};

/// Rank 0's host hands the coordinator the sampler endpoint it runs: the
/// endpoint's arena, the plan and the transports it posts sends on (all
/// kept alive by the shared pointers); the coordinator makes the executors,
/// whose token loop is its own request table.
struct sampler_ready {
  std::shared_ptr<const planner::plan> plan;
  uint32_t node = 0;
  std::shared_ptr<sram_arena> arena;
  std::shared_ptr<const model::rope_table> rope;
  std::array<program_lane, 2> lanes; // by program_kind
};

using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;

} // namespace lockstep::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockstep::actors::control_in)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockstep::actors::closed)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockstep::actors::failed)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockstep::actors::sampler_ready)
