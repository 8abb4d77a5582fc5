#pragma once

// Keys of the `meta` column family. Text keys: meta is small and a human
// reading it with `ldb` should understand it.

#include <string_view>

namespace lockstep::storage::detail {

/// The store's format version, 4 bytes little-endian (store.hpp).
inline constexpr std::string_view format_version_key = "store.format_version";

/// The weights manifest, JSON (weight_store.hpp, docs/storage.md).
inline constexpr std::string_view manifest_key = "weights.manifest";

/// An imported model's vocabulary: its GGUF file's `tokenizer.*` metadata,
/// JSON with each value's GGUF type (storage/gguf_vocabulary.hpp).
inline constexpr std::string_view vocabulary_key = "weights.vocabulary";

/// Prefix of the per-tensor "done" markers of `weights init`; the tensor id
/// ("l3.wq", "lm_head") follows.
inline constexpr std::string_view done_prefix = "weights.done.";

/// Prefix of the per-shard "done" markers of a partial init; the shard
/// ("l3.wq[0,128)x[0,512)", detail::shard_done_key) follows. Not a
/// continuation of done_prefix ('_' not '.'), so a scan of one never sees
/// the other.
inline constexpr std::string_view shard_done_prefix = "weights.shard_done.";

} // namespace lockstep::storage::detail
