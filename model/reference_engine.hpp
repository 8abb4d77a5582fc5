#pragma once

// The single-process reference: the whole model on one CPU. It is the
// one-chip case of the shard-level API (model/shard_ops.hpp): embedding
// rows of the whole table, attention over all heads, the MLP over all rows,
// root combines of one part with the residual, final norm, all LM-head rows
// — the same functions every chip calls. Multi-chip runs are checked token
// for token and bit for bit against it.
//
// Batching and chunked prefill never change results: every token's math is
// the same sequence of kernel calls whatever else is in the batch, and
// attention reads the same KV-cache values whether they were written by a
// whole prompt, by chunks, or token by token.

#include "model/kernels.hpp"
#include "model/model_weights.hpp"
#include "model/shard_ops.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace lockstep::model {

/// One sequence's KV cache and position. Movable, not copyable.
class sequence_state {
public:
  sequence_state() = default;
  uint32_t length() const noexcept { return length_; }

private:
  friend class reference_engine;
  uint32_t length_ = 0;
  // Per layer [position][kv_dim]: the KV cache of all kv heads, the layout
  // of a kv_cache_slice over kv heads [0, n_kv_heads).
  std::vector<std::vector<float>> k_;
  std::vector<std::vector<float>> v_;
};

/// A slice of work for one sequence: the next `tokens` of it.
struct sequence_chunk {
  sequence_state* seq = nullptr;
  std::span<const int32_t> tokens;
};

class reference_engine {
public:
  /// Borrows `weights`, which must outlive the engine. Large matmuls split
  /// their rows over `threads` threads (results do not depend on it).
  explicit reference_engine(const model_weights& weights, unsigned threads = 1);

  const model_spec& spec() const noexcept { return w_.spec; }

  sequence_state new_sequence() const;

  /// Runs each chunk's tokens through the model, appending them to the
  /// sequence's KV cache, and returns the full-vocabulary logits of each
  /// chunk's *last* token (one vector per chunk, in order).
  /// Errors: invalid_argument (token id out of range, empty chunk),
  /// context_full (a sequence would pass max_context). On error no sequence
  /// is modified.
  /// Thread-safety: one call at a time per engine.
  caf::expected<std::vector<std::vector<float>>>
  forward(std::span<const sequence_chunk> batch);

private:
  caf::error layer_forward(uint32_t layer);

  const model_weights& w_;
  rope_table rope_;
  std::unique_ptr<worker_pool> pool_;
  // One root combine each for the attention output and the MLP output: the
  // whole reduction is one part holding the root node.
  combine_rule attn_root_, mlp_root_;
  // Activations of the current batch, [token][dim], reused across calls.
  std::vector<float> x_, y_, scratch_;
  std::vector<token_row> rows_;
  std::vector<sequence_state*> seqs_; // batch entry -> its sequence
  std::vector<float*> k_ptrs_, v_ptrs_; // this layer's KV, per batch entry
};

} // namespace lockstep::model
