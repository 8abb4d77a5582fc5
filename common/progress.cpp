#include "common/progress.hpp"

#include <cstdio>
#include <unistd.h>

namespace lockstep {

progress_bar::progress_bar(std::string label, uint64_t total, bool force)
    : label_(std::move(label))
    , total_(total == 0 ? 1 : total)
    , enabled_(force || isatty(STDERR_FILENO) == 1)
    , start_(std::chrono::steady_clock::now())
    , last_draw_(start_) {
  if (enabled_)
    draw();
}

progress_bar::~progress_bar() {
  finish();
}

void progress_bar::advance(uint64_t units) {
  done_ += units;
  if (!enabled_)
    return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100)) {
    last_draw_ = now;
    draw();
  }
}

void progress_bar::finish() {
  if (!enabled_ || finished_)
    return;
  finished_ = true;
  draw();
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

void progress_bar::draw() {
  constexpr int width = 30;
  double fraction = done_ >= total_ ? 1.0 : static_cast<double>(done_) / total_;
  int filled = static_cast<int>(fraction * width);
  char bar[width + 1];
  for (int i = 0; i < width; ++i)
    bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
          .count();
  std::fprintf(stderr, "\r%s [%s] %5.1f%% %.1fs", label_.c_str(), bar,
               fraction * 100.0, elapsed_s);
  std::fflush(stderr);
}

} // namespace lockstep
