#pragma once

// All weights of a model in memory, as the single-process reference engine
// needs them. Chips hold shards instead, in their SRAM at the offsets their
// plan gives (model::tensor_view over the arena).

#include "model/tensor.hpp"
#include "model/weight_gen.hpp"

#include <caf/expected.hpp>

#include <functional>
#include <vector>

namespace lockstep::model {

struct layer_weights {
  tensor attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down;
};

struct model_weights {
  model_spec spec;
  tensor tok_embedding;
  std::vector<layer_weights> layers;
  tensor final_norm;
  tensor lm_head; // empty when spec.tied_head: head() is tok_embedding

  /// The LM head's weights: lm_head, or the embedding for a tied head.
  const tensor& head() const {
    return spec.tied_head ? tok_embedding : lm_head;
  }

  /// Reads every tensor through `read` (e.g. from the weight store), whole
  /// (a tied head's lm_head is not read: it is the embedding). Stops at
  /// the first error.
  static caf::expected<model_weights>
  load(const model_spec& spec,
       const std::function<caf::expected<tensor>(tensor_id)>& read);

  /// Generates every tensor from the deterministic generator.
  static model_weights generate(const weight_generator& gen);

  /// The tensor with id `id`. REQUIRES: id belongs to this model.
  tensor& at(tensor_id id);
};

} // namespace lockstep::model
