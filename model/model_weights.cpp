#include "model/model_weights.hpp"

namespace lockstep::model {

tensor& model_weights::at(tensor_id id) {
  switch (id.kind) {
  case tensor_kind::tok_embedding:
    return tok_embedding;
  case tensor_kind::final_norm:
    return final_norm;
  case tensor_kind::lm_head:
    return lm_head;
  default:
    break;
  }
  auto& l = layers.at(id.layer);
  switch (id.kind) {
  case tensor_kind::attn_norm:
    return l.attn_norm;
  case tensor_kind::wq:
    return l.wq;
  case tensor_kind::wk:
    return l.wk;
  case tensor_kind::wv:
    return l.wv;
  case tensor_kind::wo:
    return l.wo;
  case tensor_kind::mlp_norm:
    return l.mlp_norm;
  case tensor_kind::w_gate:
    return l.w_gate;
  case tensor_kind::w_up:
    return l.w_up;
  default:
    return l.w_down;
  }
}

caf::expected<model_weights> model_weights::load(
    const model_spec& spec,
    const std::function<caf::expected<tensor>(tensor_id)>& read) {
  if (auto err = validate(spec))
    return err;
  model_weights w;
  w.spec = spec;
  w.layers.resize(spec.n_layers);
  for (auto id : stored_tensors(spec)) {
    auto t = read(id);
    if (!t)
      return t.error();
    auto shape = shape_of(spec, id.kind);
    if (t->full_shape() != shape || t->range() != whole(shape) ||
        t->type() != dtype_of(spec, id.kind))
      return caf::make_error(errc::invalid_argument,
                             "tensor " + to_string(id) +
                                 " has the wrong shape or dtype for model " +
                                 spec.name);
    w.at(id) = std::move(*t);
  }
  return w;
}

model_weights model_weights::generate(const weight_generator& gen) {
  model_weights w;
  w.spec = gen.spec();
  w.layers.resize(w.spec.n_layers);
  for (auto id : stored_tensors(w.spec))
    w.at(id) = gen.generate(id);
  return w;
}

} // namespace lockstep::model
