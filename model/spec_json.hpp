#pragma once

// The one JSON form of a model_spec, used by the weight-store manifest, the
// CLI's `-o json` output and (later) plan-cache keys.

#include "model/model_spec.hpp"

#include <nlohmann/json.hpp>

namespace lockstep::model {

/// Every field of the spec; dtype by name.
nlohmann::json to_json(const model_spec& s);

/// The inverse of to_json. Errors: invalid_spec naming the missing or
/// ill-typed field.
caf::expected<model_spec> spec_from_json(const nlohmann::json& j);

} // namespace lockstep::model
