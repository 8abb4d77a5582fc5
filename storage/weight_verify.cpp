// verify_weights: reads every tile once and reports every problem, writing
// nothing (docs/storage.md, "What verify checks").

#include "storage/weight_store.hpp"

#include "model/weight_gen.hpp"

#include "storage/detail/manifest.hpp"
#include "storage/detail/meta_keys.hpp"
#include "storage/detail/shard_cover.hpp"
#include "storage/detail/tile_codec.hpp"

#include <charconv>
#include <map>

namespace lockstep::storage {

namespace {

using model::tensor_id;

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "key 0x";
  for (char c : bytes) {
    auto b = static_cast<uint8_t>(c);
    out += digits[b >> 4];
    out += digits[b & 0xF];
  }
  return out;
}

// What the store should have of a tile. Held tiles of an unfinished init
// are checked when present but may be missing.
enum tile_expect : uint8_t { not_held, held, required };

// What verify knows about one tensor of the model while scanning.
struct tensor_state {
  tensor_id id;
  model::tensor_shape shape;
  model::dtype type;
  uint32_t n_rt = 0;
  uint32_t n_ct = 0;
  std::vector<uint8_t> expect; // tile_expect, n_rt * n_ct, row-major
  std::vector<bool> seen;      // n_rt * n_ct

  void mark(detail::tile_rect r, tile_expect e) {
    for (uint32_t rt = r.rt_begin; rt < r.rt_end; ++rt)
      for (uint32_t ct = r.ct_begin; ct < r.ct_end; ++ct)
        expect[size_t{rt} * n_ct + ct] =
            std::max<uint8_t>(expect[size_t{rt} * n_ct + ct], e);
  }
  // int8: the scales of the current row tile's first column tile seen, which
  // every other column tile of that row tile must repeat.
  uint32_t scales_row_tile = UINT32_MAX;
  std::string scales;
};

} // namespace

caf::expected<verify_report> verify_weights(const store& s,
                                            const verify_options& options) {
  auto manifest = read_manifest(s);
  if (!manifest)
    return manifest.error();
  if (!*manifest)
    return caf::make_error(errc::not_found,
                           "store " + s.dir().string() +
                               " holds no weights (run `lockstep weights "
                               "init`)");
  const auto& m = **manifest;
  if (options.deep && !m.source.empty() && options.source == nullptr)
    return caf::make_error(
        errc::invalid_argument,
        "store " + s.dir().string() + " was imported from " + m.source +
            ": --deep compares every tile with where it came from; pass "
            "that file (the generator did not make these weights)");
  bool complete = m.state == init_state::complete;
  verify_report report;
  report.partial = m.partial;
  auto problem = [&](std::string tensor, const std::string& what) {
    report.problems.push_back({std::move(tensor), false, 0, 0, what});
  };
  auto tile_problem = [&](tensor_id id, uint32_t rt, uint32_t ct,
                          const std::string& what) {
    report.problems.push_back({model::to_string(id), true, rt, ct, what});
  };

  std::map<uint64_t, tensor_state> tensors;
  std::vector<uint64_t> order;
  for (auto id : model::stored_tensors(m.spec)) {
    tensor_state t;
    t.id = id;
    t.shape = model::shape_of(m.spec, id.kind);
    t.type = model::dtype_of(m.spec, id.kind);
    t.n_rt = row_tiles(t.shape, m.tile);
    t.n_ct = col_tiles(t.shape, m.tile);
    // A full store holds every tile; a partial one what its shards cover.
    t.expect.assign(size_t{t.n_rt} * t.n_ct, m.partial  ? not_held
                                             : complete ? required
                                                        : held);
    t.seen.assign(size_t{t.n_rt} * t.n_ct, false);
    tensors.emplace(detail::tensor_key(id), std::move(t));
    order.push_back(detail::tensor_key(id));
  }

  auto is_count = [](std::string_view value, uint64_t want) {
    uint64_t count = 0;
    auto [ptr, ec] =
        std::from_chars(value.data(), value.data() + value.size(), count);
    return ec == std::errc{} && ptr == value.data() + value.size() &&
           count == want;
  };

  // Done markers of a full store: which tensors an in-progress init
  // finished, and how many tiles each was written with.
  size_t done_count = 0;
  auto err = s.scan(
      column::meta, detail::done_prefix,
      [&](std::string_view key, std::string_view value) {
        auto name = std::string{key.substr(detail::done_prefix.size())};
        if (m.partial) {
          problem(name, "done marker of a whole tensor in a partial store");
          return true;
        }
        auto id = model::parse_tensor_id(name);
        auto it = id ? tensors.find(detail::tensor_key(*id)) : tensors.end();
        if (it == tensors.end()) {
          problem(name, "done marker of a tensor model " + m.spec.name +
                            " does not have");
          return true;
        }
        auto& t = it->second;
        if (!is_count(value, t.seen.size()))
          problem(name, "done marker says '" + std::string{value} +
                            "' tiles; the tensor has " +
                            std::to_string(t.seen.size()));
        t.mark({0, t.n_rt, 0, t.n_ct}, required);
        ++done_count;
        return true;
      });
  if (err)
    return err;

  // A partial store: the tiles its shards cover are held; those of done
  // shards (all, once complete) must be there.
  std::map<std::string, size_t> listed; // marker key -> shard
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const auto& [id, range] = m.shards[i];
    tensors.at(detail::tensor_key(id))
        .mark(detail::cover(range, m.tile), complete ? required : held);
    listed.emplace(detail::shard_done_key(id, range), i);
  }
  size_t done_shards = 0;
  err = s.scan(
      column::meta, detail::shard_done_prefix,
      [&](std::string_view key, std::string_view value) {
        auto name = std::string{key.substr(detail::shard_done_prefix.size())};
        auto it = listed.find(std::string{key});
        if (!m.partial || it == listed.end()) {
          problem(name,
                  m.partial
                      ? "done marker of a shard the manifest does not list"
                      : "done marker of a shard in a store of whole "
                        "tensors");
          return true;
        }
        const auto& [id, range] = m.shards[it->second];
        auto rect = detail::cover(range, m.tile);
        if (!is_count(value, rect.tiles()))
          problem(model::to_string(id), "done marker of " +
                                            detail::shard_name(id, range) +
                                            " says '" + std::string{value} +
                                            "' tiles; the shard covers " +
                                            std::to_string(rect.tiles()));
        tensors.at(detail::tensor_key(id)).mark(rect, required);
        ++done_shards;
        return true;
      });
  if (err)
    return err;
  report.shards_checked = complete ? m.shards.size() : done_shards;
  if (!complete)
    problem(m.spec.name,
            "weights init is incomplete (" +
                (m.partial ? std::to_string(done_shards) + " of " +
                                 std::to_string(m.shards.size()) + " shards"
                           : std::to_string(done_count) + " of " +
                                 std::to_string(tensors.size()) + " tensors") +
                " done); run weights init again to resume");

  model::weight_generator gen{m.spec, m.seed};
  auto expected_tile = [&](tensor_id id, const model::shard_range& r) {
    return options.source != nullptr ? (*options.source)(id, r)
                                     : gen.generate(id, r);
  };
  std::string expected;
  err = s.scan(
      column::weights, "", [&](std::string_view key, std::string_view value) {
        ++report.tiles_checked;
        report.bytes_checked += value.size();
        auto k = detail::decode_key(key);
        if (!k) {
          problem(hex(key), "undecodable key: " + detail_of(k.error()));
          return true;
        }
        auto it = tensors.find(detail::tensor_key(k->tensor));
        if (it == tensors.end()) {
          tile_problem(k->tensor, k->row_tile, k->col_tile,
                       "tile of a tensor model " + m.spec.name +
                           " does not have");
          return true;
        }
        auto& t = it->second;
        if (k->row_tile >= t.n_rt || k->col_tile >= t.n_ct) {
          tile_problem(t.id, k->row_tile, k->col_tile,
                       "tile outside the tensor's " + std::to_string(t.n_rt) +
                           "x" + std::to_string(t.n_ct) + " tiles");
          return true;
        }
        auto at = size_t{k->row_tile} * t.n_ct + k->col_tile;
        if (t.expect[at] == not_held) {
          tile_problem(t.id, k->row_tile, k->col_tile,
                       "tile outside the shards this partial store holds");
          return true;
        }
        t.seen[at] = true;
        auto bad = [&](const std::string& what) {
          tile_problem(t.id, k->row_tile, k->col_tile, what);
          return true;
        };
        auto v = detail::decode_tile(value);
        if (!v)
          return bad(detail_of(v.error()));
        if (v->key != *k)
          return bad("value belongs to " + model::to_string(v->key.tensor) +
                     " tile " +
                     detail::tile_name(v->key.row_tile, v->key.col_tile));
        uint32_t rows =
            std::min(m.tile.rows, t.shape.rows - k->row_tile * m.tile.rows);
        uint32_t cols =
            std::min(m.tile.cols, t.shape.cols - k->col_tile * m.tile.cols);
        if (v->type != t.type || v->rows != rows || v->cols != cols)
          return bad("wrong size: " + std::to_string(v->rows) + "x" +
                     std::to_string(v->cols) + " " + model::to_string(v->type) +
                     " (expected " + std::to_string(rows) + "x" +
                     std::to_string(cols) + " " + model::to_string(t.type) +
                     ")");
        if (t.type == model::dtype::int8) {
          if (t.scales_row_tile != k->row_tile) {
            t.scales_row_tile = k->row_tile;
            t.scales.assign(v->scales);
          } else if (v->scales != t.scales) {
            return bad("int8 row scales differ from the row's other tiles");
          }
        }
        if (options.deep) {
          uint32_t row0 = k->row_tile * m.tile.rows;
          uint32_t col0 = k->col_tile * m.tile.cols;
          auto want =
              expected_tile(t.id, {row0, row0 + rows, col0, col0 + cols});
          if (!want)
            return bad(detail_of(want.error()));
          detail::encode_tile(*k, *want, row0, col0, rows, cols, expected);
          if (expected != value)
            return bad(m.source.empty()
                           ? "differs from the generator's weights (seed " +
                                 std::to_string(m.seed) + ")"
                           : "differs from " + m.source);
        }
        return true;
      });
  if (err)
    return err;

  for (auto key : order) {
    auto& t = tensors.at(key);
    size_t want = 0;
    size_t missing = 0;
    for (size_t i = 0; i < t.seen.size(); ++i)
      if (t.expect[i] == required) {
        ++want;
        missing += !t.seen[i];
      }
    if (want == 0)
      continue;
    ++report.tensors_checked;
    if (missing == 0)
      continue;
    if (missing == want) {
      problem(model::to_string(t.id),
              "missing (all " + std::to_string(missing) +
                  (want == t.seen.size() ? " tiles)" : " held tiles)"));
      continue;
    }
    for (uint32_t rt = 0; rt < t.n_rt; ++rt)
      for (uint32_t ct = 0; ct < t.n_ct; ++ct) {
        auto at = size_t{rt} * t.n_ct + ct;
        if (t.expect[at] == required && !t.seen[at])
          tile_problem(t.id, rt, ct, "missing");
      }
  }
  return report;
}

} // namespace lockstep::storage
