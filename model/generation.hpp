#pragma once

// Prefill + decode loops on the reference engine, for one request or a batch
// of them, producing the tokens and the SHA-256 of the logits behind them.

#include "model/reference_engine.hpp"
#include "model/sampler.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lockstep::model {

struct generation_request {
  uint64_t request_id = 0; // keys the sampler's randomness
  std::vector<int32_t> prompt;
  uint32_t max_tokens = 0;
  sampling_params sampling;
  uint32_t prefill_chunk = 0; // tokens per prefill step; 0 = whole prompt
};

struct generation_result {
  std::vector<int32_t> tokens; // generated ids, prompt excluded
  // SHA-256 over the little-endian f32 full-vocabulary logits that produced
  // each generated token, in order.
  std::string logits_sha256;
};

/// Runs the requests as one batch: prefill chunks of every request share
/// forward passes, then each decode step advances every unfinished request by
/// one token. Results are the same as running each request alone.
/// Errors: invalid_argument (empty prompt, bad sampling params, token out of
/// range), context_full.
caf::expected<std::vector<generation_result>>
generate(reference_engine& engine, std::span<const generation_request> reqs);

} // namespace lockstep::model
