#include "model/reference_engine.hpp"

#include <cmath>
#include <string>

namespace lockstep::model {

namespace {

const float* f32_data(const tensor& t) {
  return reinterpret_cast<const float*>(t.bytes().data());
}

void add_in_place(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i)
    x[i] = x[i] + y[i];
}

} // namespace

reference_engine::reference_engine(const model_weights& weights,
                                   unsigned threads)
    : w_(weights)
    , rope_(weights.spec.head_dim, weights.spec.rope_theta,
            weights.spec.max_context)
    , pool_(std::make_unique<worker_pool>(threads == 0 ? 1 : threads)) {
  const auto& s = w_.spec;
  scratch_.resize(s.max_context +
                  (size_t{blocks_of(s.max_context)} + block_lanes) *
                      s.head_dim);
}

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

  x_.resize(n_tok * s.d_model);
  xn_.resize(n_tok * s.d_model);
  q_.resize(n_tok * s.q_dim());
  k_.resize(n_tok * s.kv_dim());
  v_.resize(n_tok * s.kv_dim());
  attn_.resize(n_tok * s.q_dim());
  ffn_a_.resize(n_tok * s.d_ff);
  ffn_b_.resize(n_tok * s.d_ff);
  tok_seq_.clear();
  tok_pos_.clear();
  size_t t = 0;
  for (const auto& c : batch) {
    uint32_t new_len = c.seq->length_ + static_cast<uint32_t>(c.tokens.size());
    for (uint32_t l = 0; l < s.n_layers; ++l) {
      c.seq->k_[l].resize(size_t{new_len} * s.kv_dim());
      c.seq->v_[l].resize(size_t{new_len} * s.kv_dim());
    }
    for (size_t j = 0; j < c.tokens.size(); ++j, ++t) {
      tok_seq_.push_back(c.seq);
      tok_pos_.push_back(c.seq->length_ + static_cast<uint32_t>(j));
      w_.tok_embedding.to_f32(static_cast<uint32_t>(c.tokens[j]), 0, s.d_model,
                              x_.data() + t * s.d_model);
    }
  }

  for (uint32_t l = 0; l < s.n_layers; ++l)
    layer_forward(l, static_cast<uint32_t>(n_tok));

  // Final norm and LM head for the last token of each chunk only.
  std::vector<std::vector<float>> logits;
  logits.reserve(batch.size());
  std::vector<float> normed(s.d_model);
  t = 0;
  for (const auto& c : batch) {
    t += c.tokens.size();
    rms_norm(x_.data() + (t - 1) * s.d_model, f32_data(w_.final_norm),
             s.d_model, s.rms_eps, normed.data());
    std::vector<float> out(s.vocab);
    matmul({normed.data(), 1, s.d_model, &w_.lm_head, pool_.get()}, out.data(),
           s.vocab);
    logits.push_back(std::move(out));
    c.seq->length_ += static_cast<uint32_t>(c.tokens.size());
  }
  return logits;
}

void reference_engine::layer_forward(uint32_t layer, uint32_t n_tok) {
  const auto& s = w_.spec;
  const auto& lw = w_.layers[layer];
  const uint32_t d = s.d_model;
  const uint32_t qd = s.q_dim();
  const uint32_t kvd = s.kv_dim();
  const uint32_t hd = s.head_dim;
  const uint32_t group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // Attention block.
  for (uint32_t t = 0; t < n_tok; ++t)
    rms_norm(x_.data() + size_t{t} * d, f32_data(lw.attn_norm), d, s.rms_eps,
             xn_.data() + size_t{t} * d);
  matmul({xn_.data(), n_tok, d, &lw.wq, pool_.get()}, q_.data(), qd);
  matmul({xn_.data(), n_tok, d, &lw.wk, pool_.get()}, k_.data(), kvd);
  matmul({xn_.data(), n_tok, d, &lw.wv, pool_.get()}, v_.data(), kvd);
  // RoPE, then every token's K/V goes into its cache before any attention
  // reads it: a token attends to positions [0, pos], all written by now.
  for (uint32_t t = 0; t < n_tok; ++t) {
    rope_.apply(q_.data() + size_t{t} * qd, s.n_heads, tok_pos_[t]);
    rope_.apply(k_.data() + size_t{t} * kvd, s.n_kv_heads, tok_pos_[t]);
    auto* seq = tok_seq_[t];
    std::copy_n(k_.data() + size_t{t} * kvd, kvd,
                seq->k_[layer].data() + size_t{tok_pos_[t]} * kvd);
    std::copy_n(v_.data() + size_t{t} * kvd, kvd,
                seq->v_[layer].data() + size_t{tok_pos_[t]} * kvd);
  }
  for (uint32_t t = 0; t < n_tok; ++t) {
    auto* seq = tok_seq_[t];
    for (uint32_t h = 0; h < s.n_heads; ++h) {
      uint32_t kvh = h / group;
      attention_head(q_.data() + size_t{t} * qd + size_t{h} * hd,
                     seq->k_[layer].data() + size_t{kvh} * hd,
                     seq->v_[layer].data() + size_t{kvh} * hd, tok_pos_[t] + 1,
                     kvd, hd, scale,
                     attn_.data() + size_t{t} * qd + size_t{h} * hd,
                     scratch_.data());
    }
  }
  matmul({attn_.data(), n_tok, qd, &lw.wo, pool_.get()}, xn_.data(), d);
  add_in_place(x_.data(), xn_.data(), size_t{n_tok} * d);

  // MLP block.
  for (uint32_t t = 0; t < n_tok; ++t)
    rms_norm(x_.data() + size_t{t} * d, f32_data(lw.mlp_norm), d, s.rms_eps,
             xn_.data() + size_t{t} * d);
  matmul({xn_.data(), n_tok, d, &lw.w_gate, pool_.get()}, ffn_a_.data(),
         s.d_ff);
  matmul({xn_.data(), n_tok, d, &lw.w_up, pool_.get()}, ffn_b_.data(), s.d_ff);
  swiglu(ffn_a_.data(), ffn_b_.data(), n_tok * s.d_ff, ffn_a_.data());
  matmul({ffn_a_.data(), n_tok, s.d_ff, &lw.w_down, pool_.get()}, xn_.data(),
         d);
  add_in_place(x_.data(), xn_.data(), size_t{n_tok} * d);
}

} // namespace lockstep::model
