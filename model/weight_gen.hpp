#pragma once

// Deterministic synthetic weights. Every element is a pure function of
// (seed, tensor id, row, col) — a counter-based generator, no state — so any
// tensor or any shard of it is generated independently and identically on
// any host, in any order, by any number of threads.
//
// Distributions (so that activations stay O(1) through the stack):
//   matrices   uniform in [-a_r, a_r), a_r = sqrt(3 / cols) * (0.75 + 0.5 u_r)
//              with u_r a per-row uniform in [0, 1);
//   int8       q uniform in [-127, 127], scale_r = a_r / 127;
//   embedding  uniform in [-1, 1);
//   norms      1 + 0.1 * uniform in [-1, 1).

#include "model/tensor.hpp"

#include <cstdint>

namespace lockstep::model {

class weight_generator {
public:
  weight_generator(model_spec spec, uint64_t seed);

  const model_spec& spec() const noexcept { return spec_; }
  uint64_t seed() const noexcept { return seed_; }

  /// Generates shard `range` of tensor `id` in the spec's dtype for it.
  /// Errors: invalid_shard.
  caf::expected<tensor> generate(tensor_id id, const shard_range& range) const;

  /// The whole tensor.
  tensor generate(tensor_id id) const;

private:
  model_spec spec_;
  uint64_t seed_;
};

/// 64-bit counter-based hash (SplitMix64's finaliser over a combined key):
/// the generator's only source of randomness; also used by the sampler.
uint64_t mix64(uint64_t key, uint64_t counter);

/// Uniform float in [-1, 1) with 24 bits of precision, from a 64-bit hash.
float uniform_pm1(uint64_t bits);

} // namespace lockstep::model
