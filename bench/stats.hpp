#pragma once

// Small helpers shared by the benchmark suites: wall-clock timing and medians
// (machines here are shared and noisy, so every figure is a median).

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

namespace lockstep::bench {

inline double now_s() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// CPU seconds used so far by all threads of this process. Beside wall time
/// it shows how much of a core a measurement really got on a shared machine.
inline double process_cpu_s() {
  return static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
}

inline double median(std::vector<double> v) {
  if (v.empty())
    return 0.0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Minimum, median and maximum of a set of measurements, and how many.
struct spread {
  double min = 0.0;
  double median = 0.0;
  double max = 0.0;
  size_t runs = 0;
};

inline spread spread_of(const std::vector<double>& v) {
  if (v.empty())
    return {};
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return {*lo, median(v), *hi, v.size()};
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
