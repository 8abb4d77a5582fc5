#include "model/reference_engine.hpp"

#include <string>

namespace lockstep::model {

namespace {

combine_rule whole_root(uint32_t dim) {
  uint32_t nb = blocks_of(dim);
  tree_node root{0, tree_span(nb)};
  return *combine_rule::make(nb, {&root, 1}); // one node: always valid
}

attention_shard attention_of(const model_spec& s, const layer_weights& lw) {
  return {lw.attn_norm.view(), lw.wq.view(), lw.wk.view(), lw.wv.view(),
          lw.wo.view(),        0,            s.n_heads};
}

mlp_shard mlp_of(const layer_weights& lw) {
  return {lw.mlp_norm.view(), lw.w_gate.view(), lw.w_up.view(),
          lw.w_down.view()};
}

} // namespace

reference_engine::reference_engine(const model_weights& weights,
                                   unsigned threads)
    : w_(weights)
    , rope_(weights.spec.head_dim, weights.spec.rope_theta,
            weights.spec.max_context)
    , pool_(std::make_unique<worker_pool>(threads == 0 ? 1 : threads))
    , attn_root_(whole_root(weights.spec.q_dim()))
    , mlp_root_(whole_root(weights.spec.d_ff)) {}

sequence_state reference_engine::new_sequence() const {
  sequence_state seq;
  seq.k_.resize(w_.spec.n_layers);
  seq.v_.resize(w_.spec.n_layers);
  return seq;
}

caf::expected<std::vector<std::vector<float>>>
reference_engine::forward(std::span<const sequence_chunk> batch) {
  const auto& s = w_.spec;
  // Validate everything before touching any sequence.
  size_t n_tok = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& c = batch[i];
    auto where = "batch entry " + std::to_string(i);
    if (c.seq == nullptr || c.tokens.empty())
      return caf::make_error(errc::invalid_argument,
                             where + ": no sequence or no tokens");
    if (c.seq->k_.size() != s.n_layers)
      return caf::make_error(errc::invalid_argument,
                             where + ": sequence not made by this engine");
    for (size_t j = 0; j < i; ++j)
      if (batch[j].seq == c.seq)
        return caf::make_error(errc::invalid_argument,
                               where + ": sequence appears twice in a batch");
    for (auto tok : c.tokens)
      if (tok < 0 || static_cast<uint32_t>(tok) >= s.vocab)
        return caf::make_error(errc::invalid_argument,
                               where + ": token " + std::to_string(tok) +
                                   " outside the vocabulary [0, " +
                                   std::to_string(s.vocab) + ")");
    if (c.seq->length_ + c.tokens.size() > s.max_context)
      return caf::make_error(errc::context_full,
                             where + ": " + std::to_string(c.seq->length_) +
                                 " + " + std::to_string(c.tokens.size()) +
                                 " tokens exceed max_context " +
                                 std::to_string(s.max_context));
    n_tok += c.tokens.size();
  }
  if (n_tok == 0)
    return caf::make_error(errc::invalid_argument, "empty batch");

  // The step's rows: sequence = batch entry, position = where the token
  // goes; the last row of each chunk emits logits.
  rows_.clear();
  seqs_.clear();
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& c = batch[i];
    seqs_.push_back(c.seq);
    uint32_t new_len = c.seq->length_ + static_cast<uint32_t>(c.tokens.size());
    for (uint32_t l = 0; l < s.n_layers; ++l) {
      c.seq->k_[l].resize(size_t{new_len} * s.kv_dim());
      c.seq->v_[l].resize(size_t{new_len} * s.kv_dim());
    }
    for (size_t j = 0; j < c.tokens.size(); ++j)
      rows_.push_back({c.tokens[j],
                       c.seq->length_ + static_cast<uint32_t>(j),
                       static_cast<uint32_t>(i),
                       row_active |
                           (j + 1 == c.tokens.size() ? row_emits : 0u)});
  }
  x_.resize(n_tok * s.d_model);
  y_.resize(n_tok * s.d_model);
  scratch_.resize(std::max(
      attention_scratch_floats(s, s.n_heads, s.n_kv_heads,
                               static_cast<uint32_t>(n_tok), s.max_context),
      mlp_scratch_floats(s, s.d_ff, static_cast<uint32_t>(n_tok))));
  auto held = embed_rows(w_.tok_embedding.view(), rows_, x_.data());
  if (!held)
    return held.error();

  for (uint32_t l = 0; l < s.n_layers; ++l)
    if (auto err = layer_forward(l))
      return err; // inputs were validated above: a broken invariant

  // Final norm and LM head for the emitting rows (each chunk's last).
  std::vector<std::vector<float>> logits;
  logits.reserve(batch.size());
  std::vector<float> normed(s.d_model);
  for (size_t t = 0; t < rows_.size(); ++t) {
    if ((rows_[t].flags & row_emits) == 0)
      continue;
    final_norm(s, w_.final_norm.view(), x_.data() + t * s.d_model,
               normed.data());
    std::vector<float> out(s.vocab);
    lm_head_rows(w_.head().view(), normed.data(), 1, out.data(), s.vocab,
                 pool_.get());
    logits.push_back(std::move(out));
  }
  for (const auto& c : batch)
    c.seq->length_ += static_cast<uint32_t>(c.tokens.size());
  return logits;
}

caf::error reference_engine::layer_forward(uint32_t layer) {
  const auto& s = w_.spec;
  const auto& lw = w_.layers[layer];
  auto n = static_cast<uint32_t>(rows_.size());
  uint32_t d = s.d_model;
  const uint32_t cuts[] = {0, d};
  float* y = y_.data();
  piece_output out{cuts, {&y, 1}};
  const float* part = y;
  const uint32_t one_node = 1;

  // This layer's KV slice: all kv heads, one sequence per batch entry.
  k_ptrs_.clear();
  v_ptrs_.clear();
  for (auto* seq : seqs_) {
    k_ptrs_.push_back(seq->k_[layer].data());
    v_ptrs_.push_back(seq->v_[layer].data());
  }
  kv_cache_slice kv{0, s.n_kv_heads, s.max_context, s.head_dim, k_ptrs_,
                    v_ptrs_};

  // Attention, then x = x + attention output (a root combine of one part).
  if (auto err = attention_part(s, attention_of(s, lw), rope_, x_.data(),
                                rows_, kv, out, scratch_, pool_.get()))
    return err;
  if (auto err = combine(attn_root_, {&part, 1}, {&one_node, 1}, n, d,
                         x_.data(), d, x_.data()))
    return err;
  // MLP, then x = x + MLP output.
  if (auto err = mlp_part(s, mlp_of(lw), x_.data(), n, out, scratch_,
                          pool_.get()))
    return err;
  return combine(mlp_root_, {&part, 1}, {&one_node, 1}, n, d, x_.data(), d,
                 x_.data());
}

} // namespace lockstep::model
