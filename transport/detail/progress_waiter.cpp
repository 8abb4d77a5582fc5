#include "transport/detail/progress_waiter.hpp"

#include "transport/detail/doorbell.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>

namespace lockstep::transport::detail {

namespace {
constexpr unsigned long tight_slack_ns = 1000;

int64_t monotonic_now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
} // namespace

void progress_waiter::activity() {
  active_ns_ = monotonic_now();
  sleep_ns_ = first_sleep_ns;
}

timer_slack_guard::timer_slack_guard() {
  previous_ = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  prctl(PR_SET_TIMERSLACK, tight_slack_ns, 0, 0, 0);
}

timer_slack_guard::~timer_slack_guard() {
  if (previous_ > 0)
    prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(previous_), 0, 0, 0);
}

void timer_slack_guard::set_for_this_thread() {
  static thread_local bool done = false;
  if (!done) {
    prctl(PR_SET_TIMERSLACK, tight_slack_ns, 0, 0, 0);
    done = true;
  }
}

caf::expected<progress_waiter> progress_waiter::create() {
  progress_waiter w;
  w.event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w.event_fd_ < 0)
    return caf::make_error(errc::fabric_failure,
                           std::string{"eventfd for the progress thread: "} +
                               std::strerror(errno));
  return w;
}

progress_waiter::progress_waiter(progress_waiter&& o) noexcept
    : event_fd_(o.event_fd_)
    , active_ns_(o.active_ns_)
    , sleep_ns_(o.sleep_ns_)
    , sleeps_(o.sleeps_.load()) {
  o.event_fd_ = -1;
}

progress_waiter& progress_waiter::operator=(progress_waiter&& o) noexcept {
  if (this != &o) {
    if (event_fd_ >= 0)
      ::close(event_fd_);
    event_fd_ = o.event_fd_;
    active_ns_ = o.active_ns_;
    sleep_ns_ = o.sleep_ns_;
    sleeps_ = o.sleeps_.load();
    o.event_fd_ = -1;
  }
  return *this;
}

progress_waiter::~progress_waiter() {
  if (event_fd_ >= 0)
    ::close(event_fd_);
}

void progress_waiter::notify() {
  // Dekker-style with sleep(): either the sleeper sees notified_ before it
  // blocks, or we see it sleeping and wake it. The syscall is paid only
  // when someone really sleeps.
  notified_.store(true, std::memory_order_seq_cst);
  if (bell_ != nullptr) {
    bell_->ring();
    return;
  }
  if (sleeping_.load(std::memory_order_seq_cst)) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(event_fd_, &one, sizeof(one));
  }
}

bool progress_waiter::sleep(int cq_fd, bool may_block, int64_t limit_ns,
                            const std::function<bool()>& recheck) {
  if (notified_.exchange(false, std::memory_order_seq_cst))
    return true;
  if (limit_ns <= 0)
    return false;
  auto idle_ns = monotonic_now() - active_ns_;
  if (idle_ns < spin_ns) {
    // A yield costs ~0.5 us here: only once the reply is not immediate.
    if (idle_ns > spin_ns / 5)
      std::this_thread::yield();
    return false;
  }
  bool blocking = may_block && (cq_fd >= 0 || bell_ != nullptr);
  int64_t ns;
  if (blocking) {
    ns = std::min(limit_ns, max_block_ns);
  } else {
    ns = std::min(limit_ns, sleep_ns_);
    sleep_ns_ = std::min(max_sleep_ns, sleep_ns_ + sleep_ns_ / 2);
  }
  if (ns <= 0)
    return false;
  if (bell_ != nullptr) {
    auto seen = bell_->arm();
    if (notified_.exchange(false, std::memory_order_seq_cst)) {
      bell_->disarm();
      return true;
    }
    if (recheck && recheck()) {
      bell_->disarm();
      return false;
    }
    bell_->sleep(seen, ns);
    bell_->disarm();
    sleeps_.fetch_add(1, std::memory_order_relaxed);
    return notified_.exchange(false, std::memory_order_seq_cst);
  }
  sleeping_.store(true, std::memory_order_seq_cst);
  if (notified_.exchange(false, std::memory_order_seq_cst)) {
    sleeping_.store(false, std::memory_order_relaxed);
    return true;
  }
  pollfd fds[2] = {{event_fd_, POLLIN, 0}, {cq_fd, POLLIN, 0}};
  timespec ts{static_cast<time_t>(ns / 1'000'000'000),
              static_cast<long>(ns % 1'000'000'000)};
  ::ppoll(fds, blocking && cq_fd >= 0 ? 2 : 1, &ts, nullptr);
  sleeps_.fetch_add(1, std::memory_order_relaxed);
  sleeping_.store(false, std::memory_order_relaxed);
  if (fds[0].revents & POLLIN) {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(event_fd_, &v, sizeof(v));
  }
  return notified_.exchange(false, std::memory_order_seq_cst);
}

} // namespace lockstep::transport::detail
