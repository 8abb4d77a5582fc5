#pragma once

// Paced mode's estimate of host 0's clock (the reference) as a linear
// function of this host's: offset(t) = offset_ns + rate * (t - at_ns).
// Fed with one NTP-style sample per re-sync burst; the rate (relative drift)
// is a least-squares fit over the last `window` samples, so slot starts stay
// aligned between re-syncs even when crystals run at different speeds.
//
// Pure arithmetic, no clock reads. Thread-safety: none (the progress thread).

#include <cstddef>
#include <cstdint>
#include <deque>

namespace lockstep::transport::detail {

/// One ping/pong with host 0: `local_ns` the midpoint of the round on this
/// host's clock, `offset_ns` host 0's clock there minus `local_ns`, `rtt_ns`
/// the round trip (the offset is within rtt / 2 of the truth).
struct clock_sample {
  int64_t local_ns = 0;
  int64_t offset_ns = 0;
  int64_t rtt_ns = 0;
};

class clock_model {
public:
  /// Samples the fit uses (about 8 s of history at one re-sync a second).
  static constexpr size_t window = 8;
  /// Rates beyond this are refused as measurement noise: quartz is within
  /// ~100 ppm; 5000 ppm leaves room for the tests' injected drift.
  static constexpr double max_rate = 5e-3;
  /// A rate is fitted only over at least this much history; before that
  /// the model is a constant offset.
  static constexpr int64_t min_span_ns = 200'000'000;

  void add(const clock_sample& s);
  bool empty() const { return samples_.empty(); }
  size_t samples() const { return samples_.size(); }

  /// Reference (host 0) clock minus this host's, at local time `local_ns`.
  int64_t offset_at(int64_t local_ns) const;
  /// This host's time at which the reference clock reads `reference_ns`.
  int64_t to_local(int64_t reference_ns) const;
  int64_t to_reference(int64_t local_ns) const {
    return local_ns + offset_at(local_ns);
  }
  /// d offset / d local time: the reference clock runs (1 + rate) times as
  /// fast as this one.
  double rate() const { return rate_; }
  /// Error bound of the newest sample the fit uses (half its round trip).
  int64_t error_ns() const { return error_ns_; }

private:
  void fit();
  std::deque<clock_sample> samples_;
  int64_t at_ns_ = 0;
  int64_t offset_ns_ = 0;
  double rate_ = 0;
  int64_t error_ns_ = 0;
};

} // namespace lockstep::transport::detail
