#pragma once

// A one-line progress bar on stderr, drawn only when stderr is a terminal so
// that redirected and `-o json` output stays clean.

#include <chrono>
#include <cstdint>
#include <string>

namespace lockstep {

class progress_bar {
public:
  /// `total` units of work, labelled `label`. Draws nothing unless stderr is
  /// a TTY (or `force` is set, for tests).
  progress_bar(std::string label, uint64_t total, bool force = false);
  ~progress_bar();

  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;

  /// Adds `units` of completed work; redraws at most ~10 times per second.
  void advance(uint64_t units);

  /// Draws the final state and ends the line.
  void finish();

  bool enabled() const noexcept { return enabled_; }

private:
  void draw();

  std::string label_;
  uint64_t total_;
  uint64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

} // namespace lockstep
