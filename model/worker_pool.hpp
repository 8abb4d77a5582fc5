#pragma once

// A small fork-join pool for the reference engine's matmuls. Work is split by
// output rows only, which never changes a result (each output element is one
// rule-ordered reduction computed by one thread), so the thread count is free
// to vary between machines and runs.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lockstep::model {

class worker_pool {
public:
  /// `threads` >= 1 counts the calling thread; threads - 1 workers start.
  explicit worker_pool(unsigned threads);
  ~worker_pool();

  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  unsigned size() const noexcept {
    return static_cast<unsigned>(workers_.size()) + 1;
  }

  /// Runs fn(i) exactly once for every i in [0, n), on the workers and the
  /// caller, and returns when all are done; everything fn wrote is then
  /// visible to the caller. Thread-safety: one run() at a time.
  void run(unsigned n, const std::function<void(unsigned)>& fn);

private:
  // One run() as a thread sees it: copied under mutex_, so a thread never
  // reads the pool's fields while the next run() rewrites them.
  struct batch {
    const std::function<void(unsigned)>* fn = nullptr;
    unsigned n = 0;
    uint32_t generation = 0;
  };

  void work_loop();
  // Runs indices of `b` until none is left; returns how many it ran.
  unsigned drain(const batch& b);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_; // a new batch, or stop_
  std::condition_variable done_; // finished_ reached the batch's n
  batch current_;                // guarded by mutex_
  unsigned finished_ = 0;        // guarded by mutex_; indices done this run
  bool stop_ = false;            // guarded by mutex_
  // (generation << 32) | next unclaimed index of the current batch. An index
  // is claimed by compare-exchange against the generation the thread copied,
  // so a thread still draining an old batch can never take an index of the
  // new one (see drain()).
  std::atomic<uint64_t> ticket_{0};
};

} // namespace lockstep::model
