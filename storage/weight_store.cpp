#include "storage/weight_store.hpp"

#include "storage/detail/manifest.hpp"
#include "storage/detail/meta_keys.hpp"
#include "storage/detail/shard_cover.hpp"
#include "storage/detail/tile_codec.hpp"

#include <set>

namespace lockstep::storage {

using model::tensor_id;

const char* to_string(init_state s) {
  return s == init_state::complete ? "complete" : "in_progress";
}

std::string tile_problem::to_string() const {
  std::string out = tensor;
  if (has_tile)
    out += " tile " + detail::tile_name(row_tile, col_tile);
  return out + ": " + what;
}

uint32_t row_tiles(model::tensor_shape shape, tile_shape tile) {
  return (shape.rows + tile.rows - 1) / tile.rows;
}

uint32_t col_tiles(model::tensor_shape shape, tile_shape tile) {
  return (shape.cols + tile.cols - 1) / tile.cols;
}

caf::expected<std::optional<weights_manifest>> read_manifest(const store& s) {
  auto text = s.get(column::meta, detail::manifest_key);
  if (!text)
    return text.error();
  if (!*text)
    return std::optional<weights_manifest>{};
  auto m = detail::decode_manifest(**text);
  if (!m)
    return caf::make_error(errc::corrupt, "store " + s.dir().string() + ": " +
                                              detail_of(m.error()));
  return std::optional<weights_manifest>{std::move(*m)};
}

weight_store::weight_store(const store* s, weights_manifest m)
    : store_(s)
    , manifest_(std::move(m)) {
  if (manifest_.partial)
    held_ = std::make_shared<const detail::held_tiles>(manifest_.tile,
                                                       manifest_.shards);
}

caf::expected<weight_store> weight_store::open(const store& s) {
  auto m = read_manifest(s);
  if (!m)
    return m.error();
  if (!*m)
    return caf::make_error(errc::not_found,
                           "store " + s.dir().string() +
                               " holds no weights (run `lockstep weights "
                               "init`)");
  const auto& man = **m;
  if (man.state != init_state::complete) {
    // Partial: the markers of shards the manifest lists (a stray one would
    // overstate the progress; verify reports it).
    std::set<std::string> listed;
    for (const auto& [id, range] : man.shards)
      listed.insert(detail::shard_done_key(id, range));
    size_t done = 0;
    if (auto err = s.scan(
            column::meta,
            man.partial ? detail::shard_done_prefix : detail::done_prefix,
            [&](std::string_view key, std::string_view) {
              done += !man.partial || listed.count(std::string{key}) > 0;
              return true;
            }))
      return err;
    return caf::make_error(
        errc::incomplete,
        "store " + s.dir().string() + ": weights init of " + man.spec.name +
            (man.partial ? " (partial)" : "") + " is incomplete (" +
            std::to_string(done) + " of " +
            std::to_string(man.partial ? man.shards.size()
                                       : model::stored_tensors(man.spec).size()) +
            (man.partial ? " shards" : " tensors") +
            " done); run weights init again to resume");
  }
  return weight_store{&s, std::move(**m)};
}

caf::error weight_store::check_model(const model::model_spec& want) const {
  const auto& have = spec();
  auto where =
      "store " + store_->dir().string() + " holds model '" + have.name + "'";
  if (want.name != have.name)
    return caf::make_error(errc::mismatch, where + ", not '" + want.name + "'");
  auto differs = [&](const char* field, auto a, auto b) {
    return caf::make_error(
        errc::mismatch, where + " with " + field + " " + std::to_string(a) +
                            "; the requested model has " + std::to_string(b));
  };
#define LOCKSTEP_CHECK_FIELD(f)                                                \
  if (want.f != have.f)                                                        \
    return differs(#f, have.f, want.f);
  LOCKSTEP_CHECK_FIELD(n_layers)
  LOCKSTEP_CHECK_FIELD(d_model)
  LOCKSTEP_CHECK_FIELD(n_heads)
  LOCKSTEP_CHECK_FIELD(n_kv_heads)
  LOCKSTEP_CHECK_FIELD(head_dim)
  LOCKSTEP_CHECK_FIELD(d_ff)
  LOCKSTEP_CHECK_FIELD(vocab)
  LOCKSTEP_CHECK_FIELD(rope_theta)
  LOCKSTEP_CHECK_FIELD(rms_eps)
  LOCKSTEP_CHECK_FIELD(max_context)
#undef LOCKSTEP_CHECK_FIELD
  return {};
}

namespace {

caf::error check_tensor(const model::model_spec& spec, tensor_id id) {
  auto ids = model::all_tensors(spec);
  if (std::find(ids.begin(), ids.end(), id) == ids.end())
    return caf::make_error(errc::invalid_argument,
                           "tensor " + model::to_string(id) +
                               " is not in model " + spec.name + " (" +
                               std::to_string(spec.n_layers) + " layers)");
  return {};
}

} // namespace

bool weight_store::holds(tensor_id id, const model::shard_range& range) const {
  if (check_tensor(spec(), id) ||
      model::check_shard(model::shape_of(spec(), id.kind), range))
    return false;
  return !held_ || held_->holds(model::stored_as(spec(), id), range);
}

caf::expected<model::tensor>
weight_store::read(tensor_id id, const model::shard_range& range) const {
  const auto& s = spec();
  if (auto err = check_tensor(s, id))
    return err;
  id = model::stored_as(s, id); // a tied head reads the embedding
  auto shape = model::shape_of(s, id.kind);
  if (auto err = model::check_shard(shape, range))
    return err;
  if (held_ && !held_->holds(id, range)) {
    // Name what is here, so "wrong host" and "store not grown after a
    // re-plan" are told apart at a glance.
    std::string have;
    size_t n = 0;
    for (const auto& [sid, r] : manifest_.shards) {
      if (sid != id)
        continue;
      if (n < 4)
        have += (n ? ", " : "") + detail::shard_name(sid, r);
      ++n;
    }
    if (n > 4)
      have += " and " + std::to_string(n - 4) + " more";
    return caf::make_error(
        errc::not_held,
        "store " + store_->dir().string() + " is partial and does not hold " +
            detail::shard_name(id, range) + " (it holds " +
            (n ? have : "no shard of " + model::to_string(id)) + ")");
  }
  auto type = model::dtype_of(s, id.kind);
  auto tile = manifest_.tile;
  model::tensor out{shape, type, range};
  auto bad = [&](uint32_t rt, uint32_t ct, const std::string& what) {
    return caf::make_error(errc::corrupt,
                           "store " + store_->dir().string() + ": tensor " +
                               model::to_string(id) + " tile " +
                               detail::tile_name(rt, ct) + ": " + what);
  };
  for (uint32_t rt = range.row_begin / tile.rows;
       rt <= (range.row_end - 1) / tile.rows; ++rt) {
    uint32_t row0 = rt * tile.rows;
    uint32_t rows = std::min(tile.rows, shape.rows - row0);
    for (uint32_t ct = range.col_begin / tile.cols;
         ct <= (range.col_end - 1) / tile.cols; ++ct) {
      uint32_t col0 = ct * tile.cols;
      uint32_t cols = std::min(tile.cols, shape.cols - col0);
      detail::tile_key key{id, rt, ct};
      auto value = store_->get(column::weights, detail::encode_key(key));
      if (!value)
        return value.error();
      if (!*value)
        return bad(rt, ct, "missing");
      auto t = detail::decode_tile(**value);
      if (!t)
        return bad(rt, ct, detail_of(t.error()));
      if (t->key != key)
        return bad(rt, ct,
                   "value belongs to " + model::to_string(t->key.tensor) +
                       " tile " +
                       detail::tile_name(t->key.row_tile, t->key.col_tile));
      if (t->type != type || t->rows != rows || t->cols != cols)
        return bad(rt, ct,
                   "wrong size: " + std::to_string(t->rows) + "x" +
                       std::to_string(t->cols) + " " +
                       model::to_string(t->type) + " (expected " +
                       std::to_string(rows) + "x" + std::to_string(cols) + " " +
                       model::to_string(type) + ")");
      detail::copy_tile_into(*t, row0, col0, out);
    }
  }
  return out;
}

caf::expected<model::tensor> weight_store::read(tensor_id id) const {
  if (auto err = check_tensor(spec(), id))
    return err;
  return read(id, model::whole(model::shape_of(spec(), id.kind)));
}

std::vector<tensor_info> weight_store::list() const {
  std::vector<tensor_info> out;
  const auto& s = spec();
  for (auto id : model::stored_tensors(s)) {
    tensor_info info;
    info.id = id;
    info.shape = model::shape_of(s, id.kind);
    info.type = model::dtype_of(s, id.kind);
    info.bytes = model::tensor_bytes(s, id.kind);
    info.row_tiles = row_tiles(info.shape, manifest_.tile);
    info.col_tiles = col_tiles(info.shape, manifest_.tile);
    if (!held_) {
      info.held_tiles = info.tiles();
      info.held_bytes = info.bytes;
      info.shards = {model::whole(info.shape)};
    } else {
      detail::payload_counter counter{info.shape, info.type, manifest_.tile};
      held_->for_each(id, [&](uint32_t rt, uint32_t ct) {
        ++info.held_tiles;
        info.held_bytes += counter.add(rt, ct);
      });
      for (const auto& [sid, r] : manifest_.shards)
        if (sid == id)
          info.shards.push_back(r);
    }
    out.push_back(std::move(info));
  }
  return out;
}

caf::expected<verify_report>
weight_store::verify(const verify_options& options) const {
  return verify_weights(*store_, options);
}

caf::expected<model::model_spec>
imported_spec(const std::filesystem::path& dir) {
  open_options o;
  o.read_only = true;
  auto s = store::open(dir, o);
  if (!s)
    return s.error();
  auto m = read_manifest(**s);
  if (!m)
    return m.error();
  if (!*m)
    return caf::make_error(errc::not_found,
                           "store " + dir.string() + " holds no weights");
  const auto& man = **m;
  if (man.source.empty())
    return caf::make_error(errc::invalid_argument,
                           "store " + dir.string() + " holds generated " +
                               man.spec.name +
                               " weights, not an import: name the model "
                               "(--model) instead");
  if (man.partial || man.state != init_state::complete)
    return caf::make_error(errc::invalid_argument,
                           "store " + dir.string() +
                               " holds an incomplete or partial import of " +
                               man.spec.name + "; run weights import again");
  return man.spec;
}

} // namespace lockstep::storage
