#pragma once

// `weights export --gguf`: any weight store (generated or imported) as a
// llama GGUF that llama.cpp's loader takes — metadata as its `llama`
// architecture reads it, llama.cpp's tensor names, GGUF's dimension order
// (a [rows x cols] matrix is ne [cols, rows]: the same bytes) — written
// tensor by tensor. f32, f16 and bf16 tensors keep their type and bits, so
// import(export(store)) is the same store, tile for tile. int8 (one scale
// per row) has no GGUF twin: its values are written as F32 (exactly the
// f32 values lockstep computes with). An imported store's vocabulary (its
// file's tokenizer.* metadata) is written back as it was; a generated
// store has none, so the file gets a made-up SentencePiece-style one of
// the model's size (<unk>, <s>, </s>, 256 byte tokens, then "▁tN"): token
// ids stay the interface.

#include "storage/gguf_types.hpp"
#include "storage/weight_store.hpp"

#include <caf/expected.hpp>

#include <filesystem>

namespace lockstep::storage::gguf {

struct export_report {
  size_t tensors = 0;
  uint64_t file_bytes = 0;
  bool int8_as_f32 = false;       // an int8 store, written as F32
  bool made_up_vocabulary = true; // the store held none
  double seconds = 0;
};

/// Writes `ws`'s model (read from `s`) to `path` (atomically: a temporary file renamed).
/// REQUIRES: a complete, full store (a partial one lacks tensors).
/// Errors: invalid_argument (a partial or incomplete store), io_error,
/// a tile's read error.
caf::expected<export_report> export_model(const store& s,
                                          const weight_store& ws,
                                          const std::filesystem::path& path);

/// As export_model, with every matrix quantized to `matrices` (Q8_0 or
/// Q4_0, ggml's reference quantizers; norms stay F32): files that llama.cpp
/// runs with its quantized kernels. Errors: as export_model,
/// invalid_argument for another type.
caf::expected<export_report> export_model(const store& s,
                                          const weight_store& ws,
                                          const std::filesystem::path& path,
                                          ggml_type matrices);

} // namespace lockstep::storage::gguf
