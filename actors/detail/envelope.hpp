#pragma once

// Building control messages (actors/control.capnp), and the checks every
// end of the control plane shares.

#include "actors/control.capnp.h"
#include "planner/cluster_config.hpp"

#include <capnp/message.h>

#include <string>
#include <string_view>

namespace lockstep::actors::detail {

/// One Envelope being built.
class envelope {
public:
  envelope()
      : root_(builder_.initRoot<schema::Envelope>()) {}
  schema::Envelope::Builder root() { return root_; }
  capnp::MessageBuilder& builder() { return builder_; }

private:
  capnp::MallocMessageBuilder builder_;
  schema::Envelope::Builder root_;
};

/// Constant-time comparison of cluster tokens (libsodium), so a wrong
/// token's timing tells nothing about the right one.
bool same_token(capnp::Text::Reader given, const std::string& expected);

/// SHA-256 of the config's canonical form: hosts must run the head's.
std::string config_digest(const planner::cluster_config& config);

/// A fresh cluster token: 32 random bytes (libsodium), hex.
std::string new_token();

} // namespace lockstep::actors::detail
