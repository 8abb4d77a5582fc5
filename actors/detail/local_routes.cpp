#include "actors/detail/local_routes.hpp"

#include "actors/errc.hpp"
#include "transport/host_transport.hpp"

#include <caf/event_based_actor.hpp>

namespace lockstep::actors::detail {

caf::error send_transfer(caf::event_based_actor* self,
                         transport::host_transport& transport,
                         const local_routes& routes, uint32_t transfer,
                         uint64_t step) {
  if (transfer >= routes.slot_index.size())
    return caf::make_error(errc::bad_program,
                           "transfer " + std::to_string(transfer) +
                               " is not in this host's slot table");
  auto slot_transfer = routes.slot_index[transfer];
  auto path = transport.send_or_deliver(slot_transfer, step);
  if (!path)
    return path.error();
  if (*path == transport::send_path::delivered) {
    const auto& to = routes.receiver[slot_transfer];
    if (!to)
      return caf::make_error(errc::bad_program,
                             "transfer " + std::to_string(transfer) +
                                 " was delivered on this host, which runs "
                                 "no actor for its receiver");
    self->send(to, arrived{transfer, step, routes.kind});
  }
  return caf::none;
}

} // namespace lockstep::actors::detail
