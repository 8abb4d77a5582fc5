#include "model/spec_json.hpp"

namespace lockstep::model {

nlohmann::json to_json(const model_spec& s) {
  nlohmann::json j{{"name", s.name},
          {"n_layers", s.n_layers},
          {"d_model", s.d_model},
          {"n_heads", s.n_heads},
          {"n_kv_heads", s.n_kv_heads},
          {"head_dim", s.head_dim},
          {"d_ff", s.d_ff},
          {"vocab", s.vocab},
          {"rope_theta", s.rope_theta},
          {"rms_eps", s.rms_eps},
          {"max_context", s.max_context},
          {"dtype", to_string(s.weight_dtype)}};
  // Only when set: every untied spec's JSON (and the hashes and manifests
  // made of it) stays as it was.
  if (s.tied_head)
    j["tied_head"] = true;
  return j;
}

caf::expected<model_spec> spec_from_json(const nlohmann::json& j) {
  model_spec s;
  const char* field = "model";
  try {
    auto u32 = [&](const char* name) {
      field = name;
      return j.at(name).get<uint32_t>();
    };
    field = "name";
    s.name = j.at("name").get<std::string>();
    s.n_layers = u32("n_layers");
    s.d_model = u32("d_model");
    s.n_heads = u32("n_heads");
    s.n_kv_heads = u32("n_kv_heads");
    s.head_dim = u32("head_dim");
    s.d_ff = u32("d_ff");
    s.vocab = u32("vocab");
    field = "rope_theta";
    s.rope_theta = j.at("rope_theta").get<double>();
    field = "rms_eps";
    s.rms_eps = j.at("rms_eps").get<float>();
    s.max_context = u32("max_context");
    field = "dtype";
    auto type = parse_dtype(j.at("dtype").get<std::string>());
    if (!type)
      return caf::make_error(errc::invalid_spec,
                             "model.dtype: " + detail_of(type.error()));
    s.weight_dtype = *type;
    field = "tied_head";
    s.tied_head = j.contains("tied_head") && j.at("tied_head").get<bool>();
  } catch (const nlohmann::json::exception&) {
    return caf::make_error(errc::invalid_spec, std::string{"model."} + field +
                                                   ": missing or ill-typed");
  }
  return s;
}

} // namespace lockstep::model
