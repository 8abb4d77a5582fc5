// init_weights: fills the weights column family from the generator, tensor by
// tensor, resumably (docs/storage.md, "init state machine").

#include "storage/weight_store.hpp"

#include "model/weight_gen.hpp"
#include "storage/detail/manifest.hpp"
#include "storage/detail/meta_keys.hpp"
#include "storage/detail/tile_codec.hpp"

#include <chrono>
#include <set>

namespace lockstep::storage {

namespace {

using model::tensor_id;

std::string describe(const weights_manifest& m) {
  return m.spec.name + " (" + model::to_string(m.spec.weight_dtype) +
         ", weight seed " + std::to_string(m.seed) + ", tiles " +
         std::to_string(m.tile.rows) + "x" + std::to_string(m.tile.cols) + ")";
}

// Writes all tiles of `id` — stripe of rows by stripe of rows, so each
// generated row is hashed into its tiles while still in cache — in batches
// of about `batch_bytes`; the last batch also carries the done marker.
caf::error write_tensor(store& s, const model::weight_generator& gen,
                        tensor_id id, const init_options& opt) {
  const auto& spec = gen.spec();
  auto shape = model::shape_of(spec, id.kind);
  auto tile = opt.tile;
  uint32_t n_rt = row_tiles(shape, tile);
  uint32_t n_ct = col_tiles(shape, tile);
  store::batch batch;
  std::string value;
  for (uint32_t rt = 0; rt < n_rt; ++rt) {
    uint32_t row0 = rt * tile.rows;
    uint32_t rows = std::min(tile.rows, shape.rows - row0);
    auto stripe = gen.generate(id, {row0, row0 + rows, 0, shape.cols});
    if (!stripe)
      return stripe.error();
    for (uint32_t ct = 0; ct < n_ct; ++ct) {
      uint32_t col0 = ct * tile.cols;
      uint32_t cols = std::min(tile.cols, shape.cols - col0);
      detail::tile_key key{id, rt, ct};
      detail::encode_tile(key, *stripe, row0, col0, rows, cols, value);
      batch.put(column::weights, detail::encode_key(key), value);
    }
    if (batch.size_bytes() >= opt.batch_bytes && rt + 1 < n_rt) {
      if (auto err = s.write_unlogged(batch))
        return err;
      batch = store::batch{};
    }
  }
  batch.put(column::meta, detail::done_key(id),
            std::to_string(uint64_t{n_rt} * n_ct));
  return s.write_unlogged(batch);
}

caf::error write_manifest(store& s, const weights_manifest& m) {
  store::batch b;
  b.put(column::meta, detail::manifest_key, detail::encode_manifest(m));
  return s.write(b, true);
}

} // namespace

caf::expected<init_report> init_weights(store& s, const model::model_spec& spec,
                                        uint64_t seed,
                                        const init_callback& progress,
                                        const init_options& options) {
  auto start = std::chrono::steady_clock::now();
  if (s.read_only())
    return caf::make_error(errc::invalid_argument,
                           "weights init needs a writable store; " +
                               s.dir().string() + " is open read-only");
  if (auto err = model::validate(spec))
    return err;
  if (options.tile.rows == 0 || options.tile.cols == 0 ||
      options.tile.cols % model::reduction_block_elems != 0)
    return caf::make_error(
        errc::invalid_argument,
        "tile shape " + std::to_string(options.tile.rows) + "x" +
            std::to_string(options.tile.cols) +
            ": rows must be > 0 and cols a positive multiple of " +
            std::to_string(model::reduction_block_elems));
  weights_manifest want{spec, seed, options.tile, init_state::in_progress};

  auto have = read_manifest(s);
  if (!have)
    return have.error();
  if (*have) {
    auto& m = **have;
    if (m.spec != spec || m.seed != seed || m.tile != options.tile)
      return caf::make_error(errc::mismatch,
                             "store " + s.dir().string() + " holds " +
                                 describe(m) + "; asked for " + describe(want) +
                                 ": use another --db or delete this one");
    want.state = m.state;
  } else {
    // A fresh store: tiles without a manifest would be someone else's.
    bool empty = true;
    if (auto err = s.scan(column::weights, "",
                          [&](std::string_view, std::string_view) {
                            empty = false;
                            return false;
                          }))
      return err;
    if (!empty)
      return caf::make_error(errc::corrupt,
                             "store " + s.dir().string() +
                                 " holds weight tiles but no manifest");
    if (auto err = write_manifest(s, want))
      return err;
  }

  std::set<std::string> done;
  if (auto err = s.scan(column::meta, detail::done_prefix,
                        [&](std::string_view key, std::string_view) {
                          done.emplace(key.substr(detail::done_prefix.size()));
                          return true;
                        }))
    return err;

  auto ids = model::all_tensors(spec);
  init_progress p;
  p.tensors_total = ids.size();
  for (auto id : ids)
    p.bytes_total += model::tensor_bytes(spec, id.kind);
  init_report report;
  model::weight_generator gen{spec, seed};
  bool complete = want.state == init_state::complete;
  for (auto id : ids) {
    auto bytes = model::tensor_bytes(spec, id.kind);
    p.tensor = id;
    p.skipped = complete || done.count(model::to_string(id)) > 0;
    if (p.skipped) {
      ++report.tensors_skipped;
    } else {
      if (auto err = write_tensor(s, gen, id, options))
        return err;
      ++report.tensors_written;
      report.bytes_written += bytes;
    }
    ++p.tensors_done;
    p.bytes_done += bytes;
    if (progress && !progress(p) && p.tensors_done < p.tensors_total) {
      // Make the finished tensors durable, so a resume skips them even if
      // this process is killed next.
      if (auto err = s.flush())
        return err;
      return caf::make_error(errc::incomplete,
                             "weights init of " + spec.name + " into " +
                                 s.dir().string() + " stopped after " +
                                 std::to_string(p.tensors_done) + " of " +
                                 std::to_string(p.tensors_total) +
                                 " tensors; run weights init again to resume");
    }
  }
  if (!complete) {
    // Tiles were written without the WAL: make them durable before the
    // manifest (written with a synced WAL) says the store is complete.
    if (auto err = s.flush())
      return err;
    want.state = init_state::complete;
    if (auto err = write_manifest(s, want))
      return err;
  }
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return report;
}

} // namespace lockstep::storage
