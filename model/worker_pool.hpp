#pragma once

// A small fork-join pool for the reference engine's matmuls. Work is split by
// output rows only, which never changes a result (each output element is one
// rule-ordered reduction computed by one thread), so the thread count is free
// to vary between machines and runs.

#include <atomic>
#include <condition_variable>
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

  /// Runs fn(i) for every i in [0, n), on the workers and the caller, and
  /// returns when all are done. Thread-safety: one run() at a time.
  void run(unsigned n, const std::function<void(unsigned)>& fn);

private:
  void work_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned n_ = 0;
  std::atomic<unsigned> next_{0};
  unsigned finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

} // namespace lockstep::model
