#include "actors/detail/control_channel.hpp"

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace lockstep::actors::detail {

namespace {

caf::error gone(const std::string& what) {
  return caf::make_error(errc::disconnected, what);
}

// "127.0.0.1:4000" -> sockaddr; only numeric IPv4 (hosts on this machine or
// named by address in a launcher's list).
caf::expected<sockaddr_in> parse_address(const std::string& address) {
  auto colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1)
    return caf::make_error(errc::bad_request,
                           "'" + address + "' is not an IPv4 address:port");
  try {
    auto port = std::stoul(address.substr(colon + 1));
    if (port > 65535)
      throw std::out_of_range("port");
    sa.sin_port = htons(static_cast<uint16_t>(port));
  } catch (const std::exception&) {
    return caf::make_error(errc::bad_request,
                           "'" + address + "': bad port");
  }
  return sa;
}

} // namespace

control_channel::control_channel(int fd, std::string peer)
    : fd_(fd)
    , peer_(std::move(peer)) {
  int one = 1; // control messages are small: send them at once
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

control_channel::~control_channel() {
  ::close(fd_);
}

caf::expected<std::unique_ptr<control_channel>>
control_channel::connect(const std::string& address,
                         std::chrono::milliseconds timeout) {
  auto sa = parse_address(address);
  if (!sa)
    return sa.error();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto wait = std::chrono::milliseconds(10);;
       wait = std::min(wait * 2, std::chrono::milliseconds(200))) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return gone("socket: " + std::string{std::strerror(errno)});
    if (::connect(fd, reinterpret_cast<sockaddr*>(&*sa), sizeof *sa) == 0)
      return std::make_unique<control_channel>(fd, address);
    int err = errno;
    ::close(fd);
    if (std::chrono::steady_clock::now() + wait > deadline)
      return gone("cannot connect to " + address + ": " +
                  std::strerror(err));
    std::this_thread::sleep_for(wait);
  }
}

caf::error control_channel::send(capnp::MessageBuilder& message) {
  std::lock_guard<std::mutex> guard{write_mutex_};
  try {
    capnp::writeMessageToFd(fd_, message);
  } catch (const kj::Exception& e) {
    return gone("sending to " + peer_ + ": " + e.getDescription().cStr());
  }
  return {};
}

control_message::control_message(std::vector<capnp::word> words,
                                 const capnp::ReaderOptions& options)
    : words_(std::move(words))
    , reader_(std::make_unique<capnp::FlatArrayMessageReader>(
          kj::arrayPtr(words_.data(), words_.size()), options)) {}

namespace {

// Reads exactly `n` bytes. false: EOF or an error (errno kept).
bool read_fully(int fd, void* data, size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t got = ::read(fd, p, n);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return false;
    p += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

} // namespace

caf::expected<control_message> control_channel::receive() {
  // The stream framing: u32 segment count - 1, u32 size of each segment
  // (words), padding to a word, then the segments.
  uint32_t first[2];
  if (!read_fully(fd_, first, sizeof first))
    return gone(peer_ + " closed the connection");
  uint64_t segments = uint64_t{first[0]} + 1;
  if (segments > 512)
    return caf::make_error(errc::bad_message,
                           "from " + peer_ + ": " + std::to_string(segments) +
                               " segments");
  std::vector<uint32_t> sizes{first[1]};
  if (segments > 1) {
    // The rest of the table, padded to a whole word.
    std::vector<uint32_t> rest(segments - 1 + (segments % 2 == 0 ? 1 : 0));
    if (!read_fully(fd_, rest.data(), rest.size() * 4))
      return gone(peer_ + " closed the connection mid-message");
    sizes.insert(sizes.end(), rest.begin(), rest.begin() + (segments - 1));
  }
  uint64_t total = 0;
  for (auto w : sizes)
    total += w;
  uint64_t table_words = (segments + 2) / 2;
  if (total > max_message_words)
    return caf::make_error(errc::bad_message,
                           "from " + peer_ + ": a message of " +
                               std::to_string(total) + " words");
  std::vector<capnp::word> words(table_words + total);
  auto* table = reinterpret_cast<uint32_t*>(words.data());
  table[0] = first[0];
  for (uint64_t i = 0; i < segments; ++i)
    table[1 + i] = sizes[i];
  if (!read_fully(fd_, words.data() + table_words, total * 8))
    return gone(peer_ + " closed the connection mid-message");
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = max_message_words;
  opts.nestingLimit = 16;
  try {
    control_message msg{std::move(words), opts};
    (void)msg.root().which(); // a bad root pointer throws here
    return msg;
  } catch (const kj::Exception& e) {
    return caf::make_error(errc::bad_message,
                           "from " + peer_ + ": " + e.getDescription().cStr());
  }
}

caf::expected<control_message>
control_channel::receive(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (n == 0)
    return caf::make_error(errc::timed_out,
                           "no answer from " + peer_ + " within " +
                               std::to_string(timeout.count()) + " ms");
  if (n < 0)
    return gone("poll: " + std::string{std::strerror(errno)});
  return receive();
}

void control_channel::shutdown() {
  ::shutdown(fd_, SHUT_RDWR);
}

caf::expected<std::unique_ptr<control_listener>>
control_listener::listen(const std::string& address) {
  auto sa = parse_address(address);
  if (!sa)
    return sa.error();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return gone("socket: " + std::string{std::strerror(errno)});
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&*sa), sizeof *sa) != 0 ||
      ::listen(fd, 64) != 0) {
    int err = errno;
    ::close(fd);
    return gone("cannot listen on " + address + ": " + std::strerror(err));
  }
  socklen_t len = sizeof *sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&*sa), &len);
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
  return std::unique_ptr<control_listener>{new control_listener(
      fd, std::string{ip} + ":" + std::to_string(ntohs(sa->sin_port)))};
}

control_listener::~control_listener() {
  ::close(fd_);
}

caf::expected<std::unique_ptr<control_channel>> control_listener::accept() {
  sockaddr_in peer{};
  socklen_t len = sizeof peer;
  int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                     SOCK_CLOEXEC);
  if (fd < 0)
    return gone("listener " + address_ + " closed: " + std::strerror(errno));
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
  return std::make_unique<control_channel>(
      fd, std::string{ip} + ":" + std::to_string(ntohs(peer.sin_port)));
}

void control_listener::close() {
  ::shutdown(fd_, SHUT_RDWR);
}

} // namespace lockstep::actors::detail
