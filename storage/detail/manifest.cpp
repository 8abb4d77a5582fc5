#include "storage/detail/manifest.hpp"

#include "storage/detail/meta_keys.hpp"
#include "storage/detail/shard_cover.hpp"
#include "storage/detail/tile_codec.hpp"

#include "model/spec_json.hpp"

#include <nlohmann/json.hpp>

namespace lockstep::storage::detail {

namespace {

// Bumped when the manifest's fields change incompatibly. A full store is
// still written as format 1, byte for byte as before partial stores
// existed; a partial store is format 2, which a reader that knows only 1
// refuses ("unknown manifest_format 2") instead of taking the store for a
// full one with missing tiles (docs/storage.md, "Format version").
constexpr uint32_t full_manifest_format = 1;
constexpr uint32_t partial_manifest_format = 2;

} // namespace

std::string encode_manifest(const weights_manifest& m) {
  const auto& s = m.spec;
  nlohmann::json j = {
      {"manifest_format",
       m.partial ? partial_manifest_format : full_manifest_format},
      {"model", model::to_json(s)},
      {"weight_seed", m.seed},
      {"tile_rows", m.tile.rows},
      {"tile_cols", m.tile.cols},
      {"tile_value_format", tile_value_format},
      {"state", to_string(m.state)},
  };
  // Generated stores keep their manifest byte for byte as before imports.
  if (!m.source.empty())
    j["source"] = m.source;
  if (m.partial) {
    // One object per shard, in the store's canonical order, so a person can
    // read which chips' parts this host holds.
    nlohmann::json shards = nlohmann::json::array();
    for (const auto& [id, r] : m.shards)
      shards.push_back({{"tensor", model::to_string(id)},
                        {"rows", {r.row_begin, r.row_end}},
                        {"cols", {r.col_begin, r.col_end}}});
    j["partial"] = true;
    j["shards"] = std::move(shards);
  }
  return j.dump(2);
}

caf::expected<weights_manifest> decode_manifest(std::string_view text) {
  auto bad = [](const std::string& what) {
    return caf::make_error(errc::corrupt, "weights manifest: " + what);
  };
  weights_manifest m;
  try {
    auto j = nlohmann::json::parse(text);
    auto format = j.at("manifest_format").get<uint32_t>();
    if (format != full_manifest_format && format != partial_manifest_format)
      return bad("unknown manifest_format " + j.at("manifest_format").dump());
    m.partial = format == partial_manifest_format;
    if (m.partial != j.contains("shards") ||
        m.partial != j.contains("partial") ||
        (m.partial && !j.at("partial").get<bool>()))
      return bad("manifest_format " + std::to_string(format) +
                 (m.partial ? " needs" : " has no") +
                 " \"partial\": true and a \"shards\" list");
    if (j.at("tile_value_format").get<uint32_t>() != tile_value_format)
      return bad("unknown tile_value_format " +
                 j.at("tile_value_format").dump());
    auto spec = model::spec_from_json(j.at("model"));
    if (!spec)
      return bad(detail_of(spec.error()));
    m.spec = std::move(*spec);
    m.seed = j.at("weight_seed").get<uint64_t>();
    if (j.contains("source"))
      m.source = j.at("source").get<std::string>();
    m.tile.rows = j.at("tile_rows").get<uint32_t>();
    m.tile.cols = j.at("tile_cols").get<uint32_t>();
    if (m.partial) {
      for (const auto& sh : j.at("shards")) {
        auto name = sh.at("tensor").get<std::string>();
        auto id = model::parse_tensor_id(name);
        if (!id)
          return bad("shard of '" + name + "': " + detail_of(id.error()));
        auto rows = sh.at("rows").get<std::vector<uint32_t>>();
        auto cols = sh.at("cols").get<std::vector<uint32_t>>();
        if (rows.size() != 2 || cols.size() != 2)
          return bad("shard of " + name +
                     ": rows and cols must be [begin, end]");
        m.shards.push_back({*id, {rows[0], rows[1], cols[0], cols[1]}});
      }
    }
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
  if (auto err = check_shards(m.spec, m.shards))
    return bad(detail_of(err));
  m.shards = canonical(m.spec, std::move(m.shards));
  return m;
}

std::string done_key(model::tensor_id id) {
  return std::string{done_prefix} + model::to_string(id);
}

} // namespace lockstep::storage::detail
