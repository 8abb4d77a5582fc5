#include "transport/detail/clock_model.hpp"

#include <algorithm>
#include <cmath>

namespace lockstep::transport::detail {

void clock_model::add(const clock_sample& s) {
  samples_.push_back(s);
  while (samples_.size() > window)
    samples_.pop_front();
  fit();
}

void clock_model::fit() {
  // Rounds much slower than the best recent one were delayed on one leg
  // (a descheduled host), so their midpoint is off: leave them out. The
  // best one always qualifies.
  int64_t best_rtt = samples_.front().rtt_ns;
  for (const auto& s : samples_)
    best_rtt = std::min(best_rtt, s.rtt_ns);
  int64_t limit = 2 * best_rtt + 50'000;
  const clock_sample* anchor = nullptr; // the newest qualifying sample
  for (const auto& s : samples_)
    if (s.rtt_ns <= limit)
      anchor = &s;
  error_ns_ = anchor->rtt_ns / 2;
  // Least squares in coordinates relative to the anchor (the values are
  // ~1e15 ns: subtract before converting to double).
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  int64_t first = anchor->local_ns;
  for (const auto& s : samples_) {
    if (s.rtt_ns > limit)
      continue;
    double x = static_cast<double>(s.local_ns - anchor->local_ns);
    double y = static_cast<double>(s.offset_ns - anchor->offset_ns);
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
    first = std::min(first, s.local_ns);
  }
  double rate = 0;
  double var = sxx - sx * sx / n;
  if (n >= 2 && anchor->local_ns - first >= min_span_ns && var > 0)
    rate = (sxy - sx * sy / n) / var;
  if (!std::isfinite(rate) || std::fabs(rate) > max_rate)
    rate = rate_; // keep the previous estimate rather than noise
  // The fitted line through the centre of the samples (its most certain
  // point), expressed at the anchor.
  double mean_x = sx / n, mean_y = sy / n;
  double at_anchor = mean_y - rate * mean_x;
  rate_ = rate;
  at_ns_ = anchor->local_ns;
  offset_ns_ =
      anchor->offset_ns + static_cast<int64_t>(std::llround(at_anchor));
}

int64_t clock_model::offset_at(int64_t local_ns) const {
  return offset_ns_ + static_cast<int64_t>(std::llround(
                          rate_ * static_cast<double>(local_ns - at_ns_)));
}

int64_t clock_model::to_local(int64_t reference_ns) const {
  // Solve t + offset_ns + rate (t - at) = reference for t.
  auto d = reference_ns - offset_ns_ - at_ns_;
  return at_ns_ + static_cast<int64_t>(
                      std::llround(static_cast<double>(d) / (1 + rate_)));
}

} // namespace lockstep::transport::detail
