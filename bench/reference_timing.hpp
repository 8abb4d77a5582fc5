#pragma once

// The reference engine timed the way the cluster suites time a cluster: one
// greedy request, TTFT = prefill of the whole prompt + the first sample,
// decode tokens/s over the tokens after it. Shared by `cluster` and `scale`
// so their ratios_vs_reference divide by the same measure.

#include "bench/stats.hpp"

#include "model/reference_engine.hpp"
#include "model/sampler.hpp"

#include <stdexcept>
#include <vector>

namespace lockstep::bench {

struct reference_timing {
  double ttft_ms = 0;
  double tokens_per_s = 0; // (tokens - 1) / decode time
};

/// REQUIRES: tokens >= 2. Throws std::runtime_error on an engine error.
inline reference_timing time_reference(model::reference_engine& engine,
                                       const std::vector<int32_t>& prompt,
                                       uint32_t tokens) {
  auto seq = engine.new_sequence();
  double t0 = now_s();
  model::sequence_chunk first{&seq, prompt};
  auto logits = engine.forward({&first, 1});
  if (!logits)
    throw std::runtime_error(render(logits.error()));
  std::vector<int32_t> tok{model::sample((*logits)[0], {}, 0, 0)};
  double t1 = now_s();
  model::sequence_chunk c{&seq, tok};
  for (uint32_t i = 1; i < tokens; ++i) {
    logits = engine.forward({&c, 1});
    if (!logits)
      throw std::runtime_error(render(logits.error()));
    tok[0] = model::sample((*logits)[0], {}, 0, i);
  }
  return {(t1 - t0) * 1e3, (tokens - 1) / (now_s() - t1)};
}

} // namespace lockstep::bench
