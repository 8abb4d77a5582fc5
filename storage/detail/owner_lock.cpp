#include "storage/detail/owner_lock.hpp"

#include "storage/errc.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace lockstep::storage::detail {

namespace {

std::string sys_error(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

// The PID recorded by the holder, or "unknown" while it is still writing it.
std::string read_pid(int fd) {
  char buf[32] = {};
  auto n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string pid;
  for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i)
    pid += buf[i];
  return pid.empty() ? "unknown" : pid;
}

} // namespace

caf::expected<owner_lock>
owner_lock::acquire(const std::filesystem::path& dir, bool shared) {
  auto file = dir / owner_lock_file;
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return caf::make_error(errc::io_error, sys_error("open " + file.string()));
  owner_lock lock{fd}; // closes fd on every error path below
  if (::flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return caf::make_error(errc::in_use, "store " + dir.string() +
                                               " in use by PID " +
                                               read_pid(fd));
    return caf::make_error(errc::io_error, sys_error("flock " + file.string()));
  }
  auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) !=
                                     static_cast<ssize_t>(pid.size()))
    return caf::make_error(errc::io_error,
                           sys_error("write PID to " + file.string()));
  return lock;
}

owner_lock::owner_lock(owner_lock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

owner_lock& owner_lock::operator=(owner_lock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

owner_lock::~owner_lock() {
  if (fd_ >= 0)
    ::close(fd_); // releases the flock
}

} // namespace lockstep::storage::detail
