#include "transport/rendezvous.hpp"

#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <unistd.h>

namespace lockstep::transport {

rendezvous::~rendezvous() = default;

file_rendezvous::file_rendezvous(std::filesystem::path dir)
    : dir_(std::move(dir)) {}

caf::expected<void>
file_rendezvous::publish(uint32_t host, std::span<const std::byte> message) {
  auto name = dir_ / ("host-" + std::to_string(host) + ".hello");
  auto tmp = dir_ / ("host-" + std::to_string(host) + ".tmp." +
                     std::to_string(getpid()));
  {
    std::ofstream out{tmp, std::ios::binary | std::ios::trunc};
    out.write(reinterpret_cast<const char*>(message.data()),
              static_cast<std::streamsize>(message.size()));
    if (!out)
      return caf::make_error(errc::peer_unreachable,
                             "rendezvous: cannot write " + tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, name, ec);
  if (ec)
    return caf::make_error(errc::peer_unreachable,
                           "rendezvous: cannot rename to " + name.string() +
                               ": " + ec.message());
  return {};
}

caf::expected<std::vector<std::byte>>
file_rendezvous::fetch(uint32_t host, std::chrono::nanoseconds timeout) {
  auto name = dir_ / ("host-" + std::to_string(host) + ".hello");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::ifstream in{name, std::ios::binary};
    if (in) {
      std::vector<char> buf{std::istreambuf_iterator<char>(in),
                            std::istreambuf_iterator<char>()};
      std::vector<std::byte> out(buf.size());
      std::memcpy(out.data(), buf.data(), buf.size());
      return out;
    }
    if (std::chrono::steady_clock::now() > deadline)
      return caf::make_error(errc::peer_unreachable,
                             "rendezvous: host " + std::to_string(host) +
                                 " did not publish " + name.string() +
                                 " in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

} // namespace lockstep::transport
