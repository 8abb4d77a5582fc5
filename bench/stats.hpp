#pragma once

// Small helpers shared by the benchmark suites: wall-clock timing and medians
// (machines here are shared and noisy, so every figure is a median).

#include <algorithm>
#include <chrono>
#include <vector>

namespace lockstep::bench {

inline double now_s() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline double median(std::vector<double> v) {
  if (v.empty())
    return 0.0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Runs `fn` `reps` times and returns the median seconds per run.
template <class F>
double median_seconds(int reps, F&& fn) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
  return median(std::move(t));
}

/// Runs `fn` `reps` times and returns the fastest run's seconds: for probes
/// of a machine's peak (STREAM reports the best run), so that ratios against
/// it are conservative.
template <class F>
double best_seconds(int reps, F&& fn) {
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    double t0 = now_s();
    fn();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

} // namespace lockstep::bench
