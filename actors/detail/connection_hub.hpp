#pragma once

// The control connections of one process and the threads that read them:
// each received Envelope goes to an actor as `control_in`, a lost
// connection as `closed`. The head listens and accepts (hosts and
// clients); a host connects to the head. Actors send through the hub
// (thread-safe). Some messages skip the actor's mailbox: a host blocked
// creating its transport still needs the head's replies to its rendezvous
// (`route` hands them to a function instead).

#include "actors/detail/control_channel.hpp"
#include "actors/messages.hpp"

#include <caf/actor.hpp>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lockstep::actors::detail {

class connection_hub {
public:
  /// Messages for which `route` returns true are consumed by it on the
  /// reader thread; all others go to `owner`.
  using router = std::function<bool(uint64_t connection, control_message&)>;

  explicit connection_hub(caf::actor owner, router route = {});
  ~connection_hub(); // close()

  /// Accepts connections on `listener` until close(); ids from 1 upwards.
  void serve(std::unique_ptr<control_listener> listener);
  /// Connects to `address` as connection 0.
  caf::error connect(const std::string& address,
                     std::chrono::milliseconds timeout);

  /// Thread-safe. Errors: disconnected (unknown or gone connection).
  caf::error send(uint64_t connection, capnp::MessageBuilder& message);
  /// Closes one connection (its reader then reports `closed`).
  void drop(uint64_t connection);
  /// After `closed` for it: joins the connection's reader thread and
  /// forgets it (a long-running head serves many clients).
  void forget(uint64_t connection);
  /// The peer address of a connection ("" if unknown).
  std::string peer(uint64_t connection) const;

  /// Stops accepting, closes every connection, joins every thread and
  /// drops the owner's handle. Idempotent; not from a reader thread. The
  /// owner must call it when it exits (its on_exit), or the two keep each
  /// other alive.
  void close();

private:
  void read_loop(uint64_t id, std::shared_ptr<control_channel> channel);

  caf::actor owner_;
  router route_;
  mutable std::mutex mutex_;
  std::map<uint64_t, std::shared_ptr<control_channel>> channels_;
  std::map<uint64_t, std::thread> readers_;
  std::thread acceptor_;
  std::unique_ptr<control_listener> listener_;
  uint64_t next_id_ = 1;
  bool closed_ = false;
};

} // namespace lockstep::actors::detail
