#pragma once

// An imported model's vocabulary, kept for the text serving to come (the
// interface is token ids for now): its GGUF file's `tokenizer.*` metadata
// (the token strings, scores, types, merges, special ids, the tokenizer
// model and chat template), every value with its GGUF type, so that an
// export writes exactly what the import read.

#include "storage/gguf_file.hpp"
#include "storage/store.hpp"

#include <caf/expected.hpp>

#include <string>
#include <utility>
#include <vector>

namespace lockstep::storage::gguf {

/// `tokenizer.*` keys and their values, in key order.
using vocabulary = std::vector<std::pair<std::string, value>>;

/// The `tokenizer.*` metadata of `f` (empty: the file has none).
vocabulary vocabulary_of(const gguf_file& f);

/// Stores `v` in `s` (replacing any; an empty `v` removes it).
/// Errors: io_error.
caf::error store_vocabulary(store& s, const vocabulary& v);

/// The vocabulary `s` holds, or nullopt. Errors: corrupt (undecodable),
/// io_error.
caf::expected<std::optional<vocabulary>> stored_vocabulary(const store& s);

} // namespace lockstep::storage::gguf
