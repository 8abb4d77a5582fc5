#pragma once

// What one chip computes: the shard-level model API.
//
// A chip holds shards of a few layers and runs, per step, some of: embedding
// rows, attention for a set of heads over its slice of the KV cache, the MLP
// for a range of d_ff rows, partial and root combines of split reductions
// in the canonical order (with the residual), the final norm and a row slice
// of the LM head. The single-process reference engine is written on these
// same functions (it is the one-chip case: all heads, all rows), so there is
// exactly one implementation of the layer math and "reference ==
// distributed" tests the plan and the transport, not two copies of the math.
//
// Every precondition that a plan or the wire can break (shapes, head and
// block ranges, sequences, positions) is checked in every build type and
// returned as an error; none becomes silent wrong numbers.
//
// Thread-safety: pure functions of their arguments, apart from outputs and
// the KV slice they append to.

#include "model/block_rule.hpp"
#include "model/kernels.hpp"
#include "model/model_spec.hpp"
#include "model/tensor.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <span>

namespace lockstep::model {

// --- Rows of a step ------------------------------------------------------------

/// One token row of a step, as it travels with the activations (the row
/// table of a buffer): which token, where in which sequence, and whether it
/// is real. 16 bytes, little-endian, the same in memory and on the wire.
struct token_row {
  int32_t token = 0;
  uint32_t position = 0; // position in its sequence (RoPE, KV index)
  uint32_t sequence = 0; // KV-cache sequence (batch slot) it belongs to
  uint32_t flags = 0;    // row_active | row_emits
};
static_assert(sizeof(token_row) == 16);

/// A real token: its K/V are appended and it attends. Rows without the flag
/// are padding (a partial prefill chunk, an empty batch slot): they write no
/// KV and their attention output is zero.
inline constexpr uint32_t row_active = 1u;
/// Its logits are wanted: the last row of its sequence in this step.
inline constexpr uint32_t row_emits = 2u;

/// The rows worth computing: up to and including the last active one.
/// Every op is row-wise (a row's values never depend on another row's), so
/// the rows past it — a partial prefill chunk's tail, the empty batch slots
/// after the last busy one — are skipped without changing a bit of the
/// others; their outputs keep whatever the buffers held and nothing reads
/// them.
uint32_t active_prefix(std::span<const token_row> rows);

// --- KV cache ------------------------------------------------------------------

/// A chip's slice of one layer's KV cache: kv heads [kv_head_begin,
/// kv_head_end) of some sequences, positions [0, positions). Non-owning:
/// sequence s's K is k[s], laid out [position][kv_head - begin][head_dim] f32
/// (V alike), wherever the owner put it (a chip's SRAM at planned offsets,
/// or a reference sequence's buffer).
struct kv_cache_slice {
  uint32_t kv_head_begin = 0;
  uint32_t kv_head_end = 0;
  uint32_t positions = 0; // capacity per sequence
  uint32_t head_dim = 0;
  std::span<float* const> k; // per sequence
  std::span<float* const> v;

  uint32_t kv_heads() const { return kv_head_end - kv_head_begin; }
  /// Bytes of K (or of V) of one sequence.
  uint64_t bytes_per_sequence() const {
    return uint64_t{positions} * kv_heads() * head_dim * 4;
  }
};

// --- Embedding -----------------------------------------------------------------

/// out[t] = row `rows[t].token` of the embedding if `emb` (a vocabulary-row
/// shard) holds it, else zeros; out is [rows][d_model]. Returns the number
/// of rows this shard held. Tokens outside the vocabulary are errors
/// (invalid_argument naming the row).
caf::expected<uint32_t> embed_rows(const tensor_view& emb,
                                   std::span<const token_row> rows,
                                   float* out);

/// x[t] = the row of token t taken from the part whose vocabulary range
/// holds it: part p (buffer [rows][d_model]) holds tokens [bounds[p],
/// bounds[p+1]). A selection, no arithmetic: the bits are the table's.
/// Errors: invalid_argument (bounds not increasing, a token held by no part).
caf::error select_embedding(std::span<const token_row> rows,
                            std::span<const uint32_t> bounds,
                            std::span<const float* const> parts,
                            uint32_t d_model, float* x);

// --- Attention -----------------------------------------------------------------

/// The attention shards of heads [head_begin, head_end) of one layer: the
/// norm (whole), wq rows of those heads, wk/wv rows of the kv heads they
/// use, wo columns of those heads.
struct attention_shard {
  tensor_view norm, wq, wk, wv, wo;
  uint32_t head_begin = 0;
  uint32_t head_end = 0;
};

/// KV heads [first, end) that query heads [h0, h1) read.
std::pair<uint32_t, uint32_t> kv_heads_of(const model_spec& spec, uint32_t h0,
                                          uint32_t h1);

/// Checks that the shards are exactly what heads [head_begin, head_end)
/// need. Errors: invalid_shard naming the tensor.
caf::error check_attention_shard(const model_spec& spec,
                                 const attention_shard& w);

/// Floats of scratch attention_part needs for `rows` rows over a KV slice of
/// `positions` positions.
size_t attention_scratch_floats(const model_spec& spec, uint32_t heads,
                                uint32_t kv_heads, uint32_t rows,
                                uint32_t positions);

/// For each row of x ([rows][d_model]): RMSNorm, q for the heads and k/v
/// for their kv heads, RoPE at the row's position; every active row's K/V
/// is appended to `kv` (sequence, position) before any row attends; each
/// active row attends over positions [0, position] of its sequence; then
/// the wo columns of the heads give the row's canonical pieces of the
/// attention output (shard_pieces(w.wo)) into `out`.
/// Errors: invalid_shard (check_attention_shard), invalid_argument (a
/// row's sequence or position outside the slice, the slice's kv heads not
/// the heads' ones, scratch too small).
caf::error attention_part(const model_spec& spec, const attention_shard& w,
                          const rope_table& rope, const float* x,
                          std::span<const token_row> rows, kv_cache_slice& kv,
                          const piece_output& out, std::span<float> scratch,
                          worker_pool* pool = nullptr);

// --- MLP -----------------------------------------------------------------------

/// The MLP shards of d_ff rows [f0, f1) (on block boundaries) of one layer:
/// the norm (whole), w_gate and w_up rows, w_down columns.
struct mlp_shard {
  tensor_view norm, gate, up, down;
};

/// Errors: invalid_shard naming the tensor.
caf::error check_mlp_shard(const model_spec& spec, const mlp_shard& w);

size_t mlp_scratch_floats(const model_spec& spec, uint32_t ff_rows,
                          uint32_t rows);

/// For each row of x: RMSNorm, gate and up rows, SwiGLU, and the w_down
/// columns' canonical pieces of the MLP output (shard_pieces(w.down)).
caf::error mlp_part(const model_spec& spec, const mlp_shard& w, const float* x,
                    uint32_t rows, const piece_output& out,
                    std::span<float> scratch, worker_pool* pool = nullptr);

// --- Combines ------------------------------------------------------------------

/// One slice of a split reduction: for every row t < rows and column c <
/// cols, gathers the node values of the parts in order (part p's buffer is
/// [rows][cols][part_nodes[p]]), evaluates `rule` and writes
/// out[t][c][outputs]. A root combine adds the residual (the reference's
/// x = x + y): out[t][c] = residual[t * residual_ld + c] + value; `out` may
/// be `residual` itself. A partial combine takes no residual.
/// Errors: invalid_split (node counts do not match the rule, a residual on a
/// partial combine or none on a root one).
caf::error combine(const combine_rule& rule,
                   std::span<const float* const> parts,
                   std::span<const uint32_t> part_nodes, uint32_t rows,
                   uint32_t cols, const float* residual, size_t residual_ld,
                   float* out);

// --- Head ----------------------------------------------------------------------

/// The final RMSNorm of one row.
void final_norm(const model_spec& spec, const tensor_view& norm,
                const float* x, float* out);

/// Logits of the LM head's row slice (vocabulary [r0, r1)) for `rows` rows
/// of normed x: out[t][r - r0], ldo floats between rows.
void lm_head_rows(const tensor_view& head, const float* x, uint32_t rows,
                  float* out, uint32_t ldo, worker_pool* pool = nullptr);

} // namespace lockstep::model
