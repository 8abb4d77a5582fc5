#include "transport/detail/doorbell.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <random>

namespace lockstep::transport::detail {

namespace {

constexpr size_t page_bytes = 4096;

caf::error doorbell_error(const std::string& what) {
  return caf::make_error(errc::fabric_failure,
                         "doorbell " + what + ": " + std::strerror(errno));
}

long futex(std::atomic<uint32_t>* addr, int op, uint32_t val,
           const timespec* ts) {
  // Not FUTEX_PRIVATE: the word is shared between processes.
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts,
                 nullptr, 0);
}

} // namespace

caf::expected<doorbell> doorbell::create(uint32_t host) {
  std::random_device rd;
  doorbell d;
  d.name_ = "/lockstep-bell-" + std::to_string(getpid()) + "-h" +
            std::to_string(host) + "-" + std::to_string(rd());
  int fd = shm_open(d.name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0)
    return doorbell_error("shm_open " + d.name_);
  d.owner_ = true;
  if (ftruncate(fd, page_bytes) != 0) {
    auto err = doorbell_error("ftruncate " + d.name_);
    ::close(fd);
    shm_unlink(d.name_.c_str());
    return err;
  }
  void* p =
      mmap(nullptr, page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    auto err = doorbell_error("mmap " + d.name_);
    shm_unlink(d.name_.c_str());
    return err;
  }
  d.page_ = new (p) page{}; // zeroed by ftruncate; constructed here
  return d;
}

caf::expected<doorbell> doorbell::open(const std::string& name) {
  doorbell d;
  d.name_ = name;
  int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0)
    return doorbell_error("shm_open " + name);
  void* p =
      mmap(nullptr, page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED)
    return doorbell_error("mmap " + name);
  d.page_ = static_cast<page*>(p);
  return d;
}

doorbell::doorbell(doorbell&& o) noexcept
    : page_(o.page_)
    , name_(std::move(o.name_))
    , owner_(o.owner_) {
  o.page_ = nullptr;
  o.owner_ = false;
}

doorbell& doorbell::operator=(doorbell&& o) noexcept {
  if (this != &o) {
    this->~doorbell();
    page_ = o.page_;
    name_ = std::move(o.name_);
    owner_ = o.owner_;
    o.page_ = nullptr;
    o.owner_ = false;
  }
  return *this;
}

doorbell::~doorbell() {
  if (page_ != nullptr)
    munmap(page_, page_bytes);
  if (owner_)
    shm_unlink(name_.c_str());
  page_ = nullptr;
  owner_ = false;
}

uint32_t doorbell::arm() {
  auto seen = page_->seq.load(std::memory_order_seq_cst);
  page_->sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return seen;
}

void doorbell::sleep(uint32_t seen, int64_t ns) {
  if (ns <= 0)
    return;
  timespec ts{static_cast<time_t>(ns / 1'000'000'000),
              static_cast<long>(ns % 1'000'000'000)};
  futex(&page_->seq, FUTEX_WAIT, seen, &ts);
}

void doorbell::disarm() {
  page_->sleeping.store(0, std::memory_order_relaxed);
}

void doorbell::ring() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (page_->sleeping.load(std::memory_order_seq_cst) == 0)
    return;
  // Clear the flag so a burst of writes costs one wake-up, not one each.
  if (page_->sleeping.exchange(0, std::memory_order_seq_cst) == 0)
    return;
  page_->seq.fetch_add(1, std::memory_order_seq_cst);
  futex(&page_->seq, FUTEX_WAKE, INT32_MAX, nullptr);
}

} // namespace lockstep::transport::detail
