#pragma once

// ggml's tensor types as GGUF files carry them, and their conversion to
// f32 exactly as ggml defines it (ggml/src/ggml-quants.c in llama.cpp:
// dequantize_row_q4_0, _q8_0, _q4_K, _q6_K; f16 and bf16 widen exactly).
// A block of `block_elems` consecutive elements of a row is stored in
// `block_bytes` bytes; rows are whole blocks.

#include <caf/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace lockstep::storage::gguf {

/// The ggml_type ids of ggml.h (stable: files store them).
enum class ggml_type : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  bf16 = 30,
};

struct type_traits {
  std::string_view name; // ggml's: "F32", "Q4_K", ...
  uint32_t block_elems = 1;
  uint32_t block_bytes = 4;
  bool supported = false; // converted to f32 here
};

/// Traits of a ggml type id, or nullopt for an id ggml does not have (or
/// this build does not know). Known but unsupported types (Q4_1, Q5_K, ...)
/// have traits with supported == false, so a file using them can be read
/// and refused by name.
std::optional<type_traits> traits_of(uint32_t type);

/// Converts `elements` elements of a supported type from `in` (exactly
/// elements / block_elems * block_bytes bytes) to f32 in `out`.
/// REQUIRES: supported type, elements % block_elems == 0, sizes as stated.
void to_f32(ggml_type type, std::span<const std::byte> in,
            std::span<float> out);

/// Quantizes `in` (whole blocks) into `out` as ggml's reference quantizers
/// do (quantize_row_q8_0_ref, quantize_row_q4_0_ref in ggml-quants.c): for
/// exports that llama.cpp then runs. REQUIRES: type Q8_0 or Q4_0, sizes as
/// to_f32's.
void from_f32(ggml_type type, std::span<const float> in,
              std::span<std::byte> out);

} // namespace lockstep::storage::gguf
