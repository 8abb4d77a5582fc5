#pragma once

// The reference run of one request on the weights every cluster host
// generates into its store (seed 42, tile for tile the same): what the
// cluster tests compare tokens and logits hashes with.

#include "model/generation.hpp"

#include <gtest/gtest.h>

#include <string>

namespace lockstep::test {

inline model::generation_result reference(const std::string& model,
                                          const model::generation_request& r) {
  auto w = model::model_weights::generate(
      model::weight_generator{*model::find_preset(model), 42});
  model::reference_engine engine{w, 2};
  auto out = model::generate(engine, {&r, 1});
  EXPECT_TRUE(out) << render(out.error());
  return out ? (*out)[0] : model::generation_result{};
}

} // namespace lockstep::test
