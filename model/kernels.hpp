#pragma once

// The deterministic kernels every chip runs (docs/determinism.md, rule v1).
//
// Every reduction — matmul dot products, RMSNorm's sum of squares, softmax's
// denominator, attention's weighted sum over positions — is computed the same
// way: elements are grouped in blocks of `reduction_block_elems`; inside a
// block, element j accumulates into lane j % 8 (multiply, then add: no FMA)
// and the 8 lanes are summed as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); block
// partials are then combined in the canonical tree of block_rule.hpp. So a
// result is bit-identical whether it is computed whole or split by rows, by
// output columns or along the reduction dimension (on block boundaries).
//
// Thread-safety: all functions are pure apart from their output arguments.

#include "model/block_rule.hpp"
#include "model/tensor.hpp"
#include "model/worker_pool.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace lockstep::model {

/// Partial sum of a[j] * b[j] for the j in one block: `len` elements
/// (len <= reduction_block_elems; only a reduction's last block is short).
float block_dot(const float* a, const float* b, uint32_t len);

/// Partial sum of v[j] for one block of `len` elements.
float block_sum(const float* v, uint32_t len);

/// sum_j a[j] * b[j] for j < n, by the rule.
float dot(const float* a, const float* b, uint32_t n);

/// sum_j v[j] for j < n, by the rule.
float sum(const float* v, uint32_t n);

/// A matmul whose weight shard covers the reduction columns [c0, c1) of the
/// full tensor: x holds, per token, the activations for *those* columns.
struct matmul_args {
  const float* x = nullptr; // [tokens x ldx], column 0 = reduction column c0
  uint32_t tokens = 0;
  uint32_t ldx = 0; // floats between tokens in x
  tensor_view w;
  /// Optional: split output rows over these threads (never changes bits).
  worker_pool* pool = nullptr;
};

/// y[t][r] for every local row r of the shard, over its whole reduction.
/// REQUIRES: the shard covers the full reduction (cols == full cols).
/// y is [tokens x ldy].
void matmul(const matmul_args& a, float* y, uint32_t ldy);

/// The canonical tree nodes whose values a shard's matmul produces:
/// `canonical_pieces(n_blocks, c0/B, c1/B)` of its column range. A shard
/// covering the whole reduction yields the root alone.
std::vector<tree_node> shard_pieces(const tensor_view& w);

/// Where the results of a matmul over part of its reduction go. Local output
/// rows (features) [cuts[j], cuts[j+1]) go to dst[j], laid out
/// [token][row - cuts[j]][piece], `pieces` values per (token, row): so each
/// slice of the output is one contiguous buffer (a reduce-scatter sends
/// slice j to chip j without a copy).
struct piece_output {
  std::span<const uint32_t> cuts; // s + 1 boundaries: 0 = cuts[0] < ... = rows
  std::span<float* const> dst;    // s destinations
};

/// For every (token, local row): the values of shard_pieces(a.w), in order.
/// Combining the pieces of all parts in canonical order (combine_rule) gives
/// exactly the bits `matmul` gives on the whole tensor; for a shard covering
/// the whole reduction the one piece *is* matmul's value.
/// REQUIRES: out.cuts as documented, dst[j] holds tokens x (cuts[j+1] -
/// cuts[j]) x pieces floats.
void matmul_pieces(const matmul_args& a, const piece_output& out);

/// out[i] = x[i] * (1 / sqrt(mean(x^2) + eps)) * w[i], i < n.
void rms_norm(const float* x, const float* w, uint32_t n, float eps,
              float* out);

/// Precomputed RoPE rotation (interleaved pairs, as in the original Llama):
/// (x[2i], x[2i+1]) at position p rotates by p * theta^(-2i/head_dim).
class rope_table {
public:
  rope_table() = default;
  rope_table(uint32_t head_dim, double theta, uint32_t max_positions);

  /// Rotates `n_heads` heads of `head_dim` floats in place.
  /// REQUIRES: position < positions().
  void apply(float* x, uint32_t n_heads, uint32_t position) const;

  uint32_t positions() const noexcept { return positions_; }

private:
  uint32_t half_ = 0;
  uint32_t positions_ = 0;
  std::vector<float> cos_; // [position][half]
  std::vector<float> sin_;
};

/// Causal attention of one query head over positions [0, n_pos):
/// out = softmax(q . k_t * scale) . v_t, with k_t = k + t * stride (and v
/// alike). `scratch` must hold >= n_pos + (blocks_of(n_pos) + 8) * head_dim
/// floats.
void attention_head(const float* q, const float* k, const float* v,
                    uint32_t n_pos, uint32_t stride, uint32_t head_dim,
                    float scale, float* out, float* scratch);

/// out[i] = silu(gate[i]) * up[i].
void swiglu(const float* gate, const float* up, uint32_t n, float* out);

} // namespace lockstep::model
