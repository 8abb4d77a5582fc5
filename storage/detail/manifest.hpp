#pragma once

// JSON encoding of the weights manifest (weight_store.hpp). JSON because meta
// is tiny and a person inspecting a store should be able to read it.

#include "storage/weight_store.hpp"

#include <string>
#include <string_view>

namespace lockstep::storage::detail {

std::string encode_manifest(const weights_manifest& m);

/// Errors: corrupt (not JSON, a field missing or of the wrong type, an
/// invalid spec), naming the field.
caf::expected<weights_manifest> decode_manifest(std::string_view text);

/// Where init's per-tensor done marker lives in `meta`.
std::string done_key(model::tensor_id id);

} // namespace lockstep::storage::detail
