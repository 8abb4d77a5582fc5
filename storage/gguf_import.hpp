#pragma once

// `weights import --gguf`: a described llama GGUF (gguf_model.hpp) into a
// weight store, tensor by tensor and row stripe by row stripe (never the
// whole file in memory), resumable like `weights init`. Values: F32, F16
// and BF16 widen exactly and Q8_0/Q4_0/Q4_K/Q6_K dequantize exactly to f32
// (gguf_types.hpp); a store of f16 or bf16 then rounds to nearest even,
// exactly what `weights init --dtype` does to a generated f32 value; an
// int8 store quantizes each row symmetrically (import_spec). A tied head
// is stored once: lm_head reads the embedding (model::stored_as).

#include "storage/gguf_model.hpp"
#include "storage/weight_store.hpp"

#include <caf/expected.hpp>

#include <optional>

namespace lockstep::storage::gguf {

/// The store's spec for `m`: its own dtype, or `dtype`. int8: one f32
/// scale per row, max |x| / 127, and q = x / scale rounded to nearest even
/// (a value that is not finite is refused when its row is read).
caf::expected<model::model_spec> import_spec(const gguf_model& m,
                                             std::optional<model::dtype> dtype);

/// Tensor shards of `m` (described from `f`) in `spec`'s dtypes, read from
/// the file on demand. `f`, `m` must outlive the source. Errors of a call:
/// io_error / invalid_file from reading the file.
tensor_source source_of(const gguf_file& f, const gguf_model& m,
                        const model::model_spec& spec);

/// "gguf:<file name>": what the store's manifest records as its source.
std::string source_name(const gguf_file& f);

/// Imports `m` (described from `f`) into `s` as `spec` (import_spec), and
/// keeps the file's vocabulary (gguf_vocabulary.hpp). Errors: as
/// import_weights.
caf::expected<init_report> import_model(store& s, const gguf_file& f,
                                        const gguf_model& m,
                                        const model::model_spec& spec,
                                        const init_callback& progress = {});

} // namespace lockstep::storage::gguf
