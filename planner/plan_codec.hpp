#pragma once

// Plan serialisation (planner/plan.capnp) and the plan hash.
//
// The hash is SHA-256 over every input that changes a plan: the model spec,
// the canonicalised cluster config, batch, context, failed chips, and the
// planner and determinism-rule versions. It keys the RocksDB plan cache.

#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace lockstep::planner {

std::string plan_hash(const cluster_config& config, const plan& p);

/// The plan as a flat Cap'n Proto message (bytes).
std::string encode_plan(const cluster_config& config, const plan& p);

/// One program's SlotTable as a message of its own (what a host's
/// transport loads): the same table encode_plan embeds.
std::vector<std::byte> slot_table_of(const cluster_config& config,
                                     const plan& p, program_kind kind);

/// The inverse of encode_plan, for the same cluster config. Errors:
/// invalid_plan (corrupt, other format version, chips not in `config`).
caf::expected<plan> decode_plan(const cluster_config& config,
                                const std::string& bytes);

/// The hash a plan for these inputs will have (plan_hash of its result),
/// computable before planning: the plan-cache key.
std::string input_hash(const cluster_config& config,
                       const model::model_spec& spec, uint32_t batch,
                       uint32_t context, std::vector<uint32_t> failed,
                       bool incremental = false);

/// Checks a serialised plan: format version, traversal limits, and that its
/// slot table lists as many transfers as the plan. Returns the plan hash it
/// carries. Errors: invalid_plan.
caf::expected<std::string> check_encoded_plan(const std::string& bytes);

} // namespace lockstep::planner
