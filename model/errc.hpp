#pragma once

// Errors of the model layer (specs, presets, weights, engine, FP environment).

#include "common/error.hpp"

#include <caf/atom.hpp>

#include <cstdint>

namespace lockstep::model {

enum class errc : uint8_t {
  unknown_model = 1,  // no preset of that name
  invalid_spec,       // a spec field is out of range (names the field)
  invalid_shard,      // a shard range is off the tensor or off block bounds
  invalid_argument,   // a bad argument to the engine or sampler
  context_full,       // a sequence would exceed max_context
  bad_fp_environment, // FTZ/DAZ set or not round-to-nearest (names which)
  invalid_split,      // a split or combine breaks the determinism rule
};

const char* to_string(errc code);
error_kind kind_of(errc code);

inline const bool errc_registered =
  register_errc<errc>(caf::atom("model"));

} // namespace lockstep::model

CAF_ERROR_CODE_ENUM(lockstep::model::errc, "model")
