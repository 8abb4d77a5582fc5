#pragma once

// Token sampling: greedy, or seeded temperature / top-k / top-p.
//
// The randomness of a draw is a pure function of (seed, request id, step), a
// counter-based stream: batching, scheduling or the number of chips never
// changes which token a request gets. All arithmetic is in double with
// det::exp, so the draw is identical on every machine.

#include <caf/expected.hpp>

#include <cstdint>
#include <span>

namespace lockstep::model {

struct sampling_params {
  uint64_t seed = 0;
  float temperature = 0.0f; // 0: greedy (argmax, lowest id on ties)
  uint32_t top_k = 0;       // 0: no top-k cut
  float top_p = 1.0f;       // 1: no nucleus cut

  bool greedy() const { return temperature <= 0.0f; }
};

/// Checks ranges (temperature >= 0, top_p in (0, 1]); names the field.
caf::error validate(const sampling_params& p);

/// Picks the next token from full-vocabulary logits.
/// REQUIRES: validate(p) succeeded, logits non-empty.
int32_t sample(std::span<const float> logits, const sampling_params& p,
               uint64_t request_id, uint64_t step);

} // namespace lockstep::model
