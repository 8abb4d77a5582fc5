#pragma once

// Errors of the model layer (specs, presets, weights, engine).

#include "common/error.hpp"

#include <caf/atom.hpp>

#include <cstdint>

namespace lockstep::model {

enum class errc : uint8_t {
  unknown_model = 1, // no preset of that name
  invalid_spec,      // a spec field is out of range (names the field)
  invalid_shard,     // a shard range is off the tensor or off block bounds
  invalid_argument,  // a bad argument to the engine or sampler
  context_full,      // a sequence would exceed max_context
};

const char* to_string(errc code);
error_kind kind_of(errc code);

namespace detail {
inline const char* errc_name(uint8_t c) {
  return to_string(static_cast<errc>(c));
}
inline error_kind errc_kind(uint8_t c) {
  return kind_of(static_cast<errc>(c));
}
inline const bool errc_registered =
    register_error_category({caf::atom("model"), &errc_name, &errc_kind});
} // namespace detail

} // namespace lockstep::model

CAF_ERROR_CODE_ENUM(lockstep::model::errc, "model")
