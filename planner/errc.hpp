#pragma once

// Errors of the planner: configs, placement, scheduling, verification.

#include "common/error.hpp"

#include <caf/atom.hpp>

#include <cstdint>

namespace lockstep::planner {

enum class errc : uint8_t {
  invalid_config = 1, // a cluster config is wrong (file, key path, what)
  infeasible,         // the model cannot fit the cluster (says why)
  invalid_plan,       // the verifier rejected a plan (names op/link/slot)
  unknown_chip,       // a chip id that is not in the cluster
  invalid_argument,   // bad batch, context, options
  io_error,           // reading a config file failed
};

const char* to_string(errc code);
error_kind kind_of(errc code);

inline const bool errc_registered = register_errc<errc>(caf::atom("planner"));

} // namespace lockstep::planner

CAF_ERROR_CODE_ENUM(lockstep::planner::errc, "planner")
