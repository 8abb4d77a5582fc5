#pragma once

// Plan serialisation (planner/plan.capnp) and the plan hash.
//
// The hash is SHA-256 over every input that changes a plan: the model spec,
// the canonicalised cluster config, batch, context, failed chips, and the
// planner and determinism-rule versions. It keys the RocksDB plan cache.

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <caf/expected.hpp>

#include <string>

namespace lockstep::planner {

std::string plan_hash(const cluster_config& config, const plan& p);

/// The plan as a flat Cap'n Proto message (bytes).
std::string encode_plan(const cluster_config& config, const plan& p);

/// Checks a serialised plan: format version, traversal limits, and that its
/// slot table lists as many transfers as the plan. Returns the plan hash it
/// carries. Errors: invalid_plan.
caf::expected<std::string> check_encoded_plan(const std::string& bytes);

} // namespace lockstep::planner
