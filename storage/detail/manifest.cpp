#include "storage/detail/manifest.hpp"

#include "storage/detail/meta_keys.hpp"
#include "storage/detail/tile_codec.hpp"

#include <nlohmann/json.hpp>

namespace lockstep::storage::detail {

namespace {

// Bumped when the manifest's fields change incompatibly.
constexpr uint32_t manifest_format = 1;

} // namespace

std::string encode_manifest(const weights_manifest& m) {
  const auto& s = m.spec;
  nlohmann::json j = {
      {"manifest_format", manifest_format},
      {"model",
       {{"name", s.name},
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
        {"dtype", model::to_string(s.weight_dtype)}}},
      {"weight_seed", m.seed},
      {"tile_rows", m.tile.rows},
      {"tile_cols", m.tile.cols},
      {"tile_value_format", tile_value_format},
      {"state", to_string(m.state)},
  };
  return j.dump(2);
}

caf::expected<weights_manifest> decode_manifest(std::string_view text) {
  auto bad = [](const std::string& what) {
    return caf::make_error(errc::corrupt, "weights manifest: " + what);
  };
  weights_manifest m;
  try {
    auto j = nlohmann::json::parse(text);
    if (j.at("manifest_format").get<uint32_t>() != manifest_format)
      return bad("unknown manifest_format " + j.at("manifest_format").dump());
    if (j.at("tile_value_format").get<uint32_t>() != tile_value_format)
      return bad("unknown tile_value_format " +
                 j.at("tile_value_format").dump());
    const auto& js = j.at("model");
    auto& s = m.spec;
    s.name = js.at("name").get<std::string>();
    s.n_layers = js.at("n_layers").get<uint32_t>();
    s.d_model = js.at("d_model").get<uint32_t>();
    s.n_heads = js.at("n_heads").get<uint32_t>();
    s.n_kv_heads = js.at("n_kv_heads").get<uint32_t>();
    s.head_dim = js.at("head_dim").get<uint32_t>();
    s.d_ff = js.at("d_ff").get<uint32_t>();
    s.vocab = js.at("vocab").get<uint32_t>();
    s.rope_theta = js.at("rope_theta").get<double>();
    s.rms_eps = js.at("rms_eps").get<float>();
    s.max_context = js.at("max_context").get<uint32_t>();
    auto type = model::parse_dtype(js.at("dtype").get<std::string>());
    if (!type)
      return bad("model.dtype: " + detail_of(type.error()));
    s.weight_dtype = *type;
    m.seed = j.at("weight_seed").get<uint64_t>();
    m.tile.rows = j.at("tile_rows").get<uint32_t>();
    m.tile.cols = j.at("tile_cols").get<uint32_t>();
    auto state = j.at("state").get<std::string>();
    if (state == to_string(init_state::complete))
      m.state = init_state::complete;
    else if (state == to_string(init_state::in_progress))
      m.state = init_state::in_progress;
    else
      return bad("unknown state '" + state + "'");
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (auto err = model::validate(m.spec))
    return bad(detail_of(err));
  if (m.tile.rows == 0 || m.tile.cols == 0)
    return bad("tile_rows and tile_cols must be > 0");
  return m;
}

std::string done_key(model::tensor_id id) {
  return std::string{done_prefix} + model::to_string(id);
}

} // namespace lockstep::storage::detail
