#include "actors/detail/envelope.hpp"

#include "common/digest.hpp"

#include <sodium.h>

namespace lockstep::actors::detail {

bool same_token(capnp::Text::Reader given, const std::string& expected) {
  if (given.size() != expected.size() || expected.empty())
    return false;
  return sodium_memcmp(given.begin(), expected.data(), expected.size()) == 0;
}

std::string config_digest(const planner::cluster_config& config) {
  auto text = planner::canonical_form(config);
  sha256 h;
  h.update(std::as_bytes(std::span{text.data(), text.size()}));
  return h.hex_digest();
}

std::string new_token() {
  if (sodium_init() < 0)
    return {};
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  char hex[2 * sizeof raw + 1];
  sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
  return hex;
}

} // namespace lockstep::actors::detail
