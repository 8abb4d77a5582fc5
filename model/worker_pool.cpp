#include "model/worker_pool.hpp"

namespace lockstep::model {

namespace {

constexpr uint64_t index_mask = 0xffff'ffffu;

constexpr uint64_t ticket_of(uint32_t generation, unsigned index) {
  return uint64_t{generation} << 32 | index;
}

} // namespace

worker_pool::worker_pool(unsigned threads) {
  for (unsigned i = 1; i < threads; ++i)
    workers_.emplace_back([this] { work_loop(); });
}

worker_pool::~worker_pool() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_)
    w.join();
}

// Why compare-exchange and not fetch_add: a worker can be pre-empted between
// running its last index of generation g and claiming the next one, while the
// caller sees g complete and starts g + 1. A fetch_add would then take (and
// lose, or run with g's job) an index of g + 1. The exchange only succeeds
// while the ticket still carries this thread's generation and an index below
// this batch's n, so a stale thread claims nothing and never calls its stale
// (possibly destroyed) fn. Generations wrap after 2^32 runs; a stale exchange
// could only succeed if a thread slept between one load and its exchange for
// a multiple of 2^32 runs and found the very same index, which we accept.
unsigned worker_pool::drain(const batch& b) {
  unsigned ran = 0;
  uint64_t ticket = ticket_.load();
  for (;;) {
    if (ticket >> 32 != b.generation || (ticket & index_mask) >= b.n)
      return ran;
    // On failure `ticket` is reloaded and checked again.
    if (ticket_.compare_exchange_weak(ticket, ticket + 1)) {
      (*b.fn)(static_cast<unsigned>(ticket & index_mask));
      ++ran;
      ticket = ticket_.load();
    }
  }
}

void worker_pool::run(unsigned n, const std::function<void(unsigned)>& fn) {
  if (n == 0)
    return;
  if (workers_.empty() || n == 1) {
    for (unsigned i = 0; i < n; ++i)
      fn(i);
    return;
  }
  batch b;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    b = {&fn, n, current_.generation + 1};
    current_ = b;
    finished_ = 0;
    // Every index of the previous batch has been claimed (its run()
    // returned), so a thread still draining it holds a ticket value that is
    // no longer current: its exchange fails against this one.
    ticket_.store(ticket_of(b.generation, 0));
  }
  wake_.notify_all();
  unsigned ran = drain(b);
  // Workers report once per batch, not per index: one lock each, and only
  // the last one to finish wakes the caller.
  std::unique_lock<std::mutex> lock{mutex_};
  finished_ += ran;
  done_.wait(lock, [&] { return finished_ == n; });
}

void worker_pool::work_loop() {
  uint32_t seen = 0;
  for (;;) {
    batch b;
    {
      std::unique_lock<std::mutex> lock{mutex_};
      wake_.wait(lock, [&] { return stop_ || current_.generation != seen; });
      if (stop_)
        return;
      // A worker that wakes late may copy a batch that is already complete;
      // drain() then finds its ticket spent or replaced and runs nothing.
      b = current_;
      seen = b.generation;
    }
    unsigned ran = drain(b);
    if (ran == 0)
      continue;
    // The batch cannot complete before this report, so b is still the
    // current batch and finished_ still counts it.
    std::lock_guard<std::mutex> guard{mutex_};
    finished_ += ran;
    if (finished_ == b.n)
      done_.notify_one();
  }
}

} // namespace lockstep::model
