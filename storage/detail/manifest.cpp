#include "storage/detail/manifest.hpp"

#include "storage/detail/meta_keys.hpp"
#include "storage/detail/tile_codec.hpp"

#include "model/spec_json.hpp"

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
      {"model", model::to_json(s)},
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
    auto spec = model::spec_from_json(j.at("model"));
    if (!spec)
      return bad(detail_of(spec.error()));
    m.spec = std::move(*spec);
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
