#pragma once

// Shapes of decoder-only transformers of the Llama family, and the presets
// lockstep knows by name. A spec is pure data: no weights, no allocation, so
// the planner can reason about a 180B model on a laptop.
//
// Tensor convention: every weight matrix is stored [rows x cols] row-major
// with rows = output features and cols = the reduction (input) dimension, as
// in y = W x. The reduction dimension is therefore always `cols`, which is
// where the determinism rule's blocks lie (docs/determinism.md).

#include "model/errc.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::model {

/// Storage type of weight matrices. Norm weights are always f32.
enum class dtype : uint8_t {
  f32 = 0,
  f16 = 1,
  bf16 = 2,
  int8 = 3, // symmetric, one f32 scale per row
};

const char* to_string(dtype t);
caf::expected<dtype> parse_dtype(std::string_view name);

/// Bytes per element of `t` (scales of int8 rows not included).
uint32_t element_bytes(dtype t);

struct model_spec {
  std::string name;
  uint32_t n_layers = 0;
  uint32_t d_model = 0;
  uint32_t n_heads = 0;
  uint32_t n_kv_heads = 0; // grouped-query attention: n_heads % n_kv_heads == 0
  uint32_t head_dim = 0;   // usually d_model / n_heads
  uint32_t d_ff = 0;       // SwiGLU hidden width
  uint32_t vocab = 0;
  double rope_theta = 10000.0;
  float rms_eps = 1e-5f;
  uint32_t max_context = 0; // tokens
  dtype weight_dtype = dtype::f32;
  /// The LM head is the token embedding (tied weights, as in many small
  /// Llama-family models): one tensor, stored and loaded once; lm_head
  /// stays a tensor of its own to the planner (head chips hold their slices
  /// in SRAM like any shard).
  bool tied_head = false;

  uint32_t q_dim() const { return n_heads * head_dim; }
  uint32_t kv_dim() const { return n_kv_heads * head_dim; }

  /// Parameters of the whole model (embedding and LM head counted apart:
  /// Llama does not tie them).
  uint64_t param_count() const;
  /// Bytes of all weights in `weight_dtype` (norms in f32, int8 scales
  /// included).
  uint64_t weight_bytes() const;
  /// Parameters and bytes of one decoder layer.
  uint64_t layer_param_count() const;
  uint64_t layer_weight_bytes() const;
  /// KV-cache bytes per token per layer (f32 K and V).
  uint64_t kv_bytes_per_token_per_layer() const;

  friend bool operator==(const model_spec&, const model_spec&) = default;
};

/// Checks every field; the error names the offending field.
caf::error validate(const model_spec& spec);

/// A named preset with its published shape, in its native dtype.
caf::expected<model_spec> find_preset(std::string_view name);

/// Names of all presets, in a stable order.
std::vector<std::string> preset_names();

// --- Tensors -----------------------------------------------------------------

enum class tensor_kind : uint8_t {
  tok_embedding = 0, // [vocab x d_model], a lookup table
  attn_norm = 1,     // [1 x d_model]
  wq = 2,            // [q_dim x d_model]
  wk = 3,            // [kv_dim x d_model]
  wv = 4,            // [kv_dim x d_model]
  wo = 5,            // [d_model x q_dim]
  mlp_norm = 6,      // [1 x d_model]
  w_gate = 7,        // [d_ff x d_model]
  w_up = 8,          // [d_ff x d_model]
  w_down = 9,        // [d_model x d_ff]
  final_norm = 10,   // [1 x d_model]
  lm_head = 11,      // [vocab x d_model]
};

const char* to_string(tensor_kind kind);
caf::expected<tensor_kind> parse_tensor_kind(std::string_view name);

/// Layer index used for the tensors outside the decoder stack.
inline constexpr uint32_t global_layer = 0xFFFF;

struct tensor_id {
  uint32_t layer = global_layer;
  tensor_kind kind = tensor_kind::tok_embedding;

  friend bool operator==(const tensor_id&, const tensor_id&) = default;
};

/// "l3.wq" for layer tensors, "lm_head" for global ones.
std::string to_string(const tensor_id& id);
caf::expected<tensor_id> parse_tensor_id(std::string_view text);

struct tensor_shape {
  uint32_t rows = 0; // output features
  uint32_t cols = 0; // reduction dimension
  uint64_t elements() const { return uint64_t{rows} * cols; }
  friend bool operator==(const tensor_shape&, const tensor_shape&) = default;
};

bool is_norm(tensor_kind kind);
tensor_shape shape_of(const model_spec& spec, tensor_kind kind);
/// Storage type of `kind` in this model (norms are f32).
dtype dtype_of(const model_spec& spec, tensor_kind kind);
/// Bytes of a whole tensor, including int8 row scales.
uint64_t tensor_bytes(const model_spec& spec, tensor_kind kind);

/// Every tensor of the model in canonical order: tok_embedding, then layer by
/// layer (attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down), then
/// final_norm and lm_head.
std::vector<tensor_id> all_tensors(const model_spec& spec);

/// The tensors a weight store holds: all_tensors, but a tied head's
/// lm_head, which is tok_embedding.
std::vector<tensor_id> stored_tensors(const model_spec& spec);

/// The tensor that holds `id`'s values: tok_embedding for a tied head's
/// lm_head (same shape and dtype), else `id`.
tensor_id stored_as(const model_spec& spec, tensor_id id);

} // namespace lockstep::model
