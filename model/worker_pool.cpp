#include "model/worker_pool.hpp"

namespace lockstep::model {

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

void worker_pool::drain() {
  for (;;) {
    unsigned i = next_.fetch_add(1);
    if (i >= n_)
      return;
    (*job_)(i);
    std::lock_guard<std::mutex> guard{mutex_};
    if (++finished_ == n_)
      done_.notify_all();
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
  {
    std::lock_guard<std::mutex> guard{mutex_};
    job_ = &fn;
    n_ = n;
    next_ = 0;
    finished_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock{mutex_};
  done_.wait(lock, [&] { return finished_ == n_; });
  job_ = nullptr;
}

void worker_pool::work_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock{mutex_};
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_)
        return;
      seen = generation_;
    }
    drain();
  }
}

} // namespace lockstep::model
