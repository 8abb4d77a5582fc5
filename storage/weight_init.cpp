// init_weights / init_weight_shards: fill the weights column family from the
// generator, tensor by tensor or shard by shard, resumably (docs/storage.md,
// "init state machine" and "Partial stores").

#include "storage/weight_store.hpp"

#include "model/weight_gen.hpp"
#include "storage/detail/manifest.hpp"
#include "storage/detail/meta_keys.hpp"
#include "storage/detail/shard_cover.hpp"
#include "storage/detail/tile_codec.hpp"

#include <chrono>
#include <map>
#include <set>

namespace lockstep::storage {

namespace {

using detail::tile_rect;
using model::tensor_id;

std::string describe(const weights_manifest& m) {
  return m.spec.name + " (" + model::to_string(m.spec.weight_dtype) +
         (m.source.empty() ? ", weight seed " + std::to_string(m.seed)
                           : ", imported from " + m.source) +
         ", tiles " + std::to_string(m.tile.rows) + "x" +
         std::to_string(m.tile.cols) + ")";
}

// The generator as a source (init), or the import's.
tensor_source generated(const weights_manifest& m, const tensor_source* given) {
  if (given != nullptr)
    return *given;
  auto gen = std::make_shared<model::weight_generator>(m.spec, m.seed);
  return [gen](tensor_id id, const model::shard_range& r) {
    return gen->generate(id, r);
  };
}

// Writes the tiles of `id` in `rect` that `written` (row-major over the
// tensor's grid) does not mark, and marks them — stripe of rows by stripe of
// rows, so each generated row is hashed into its tiles while still in cache
// — in batches of about `batch_bytes`; the last batch also carries the done
// marker (`marker_key` -> `marker_value`), so the marker never outlives the
// tiles (atomic flush keeps a prefix of the write sequence). A stripe is
// generated only over the columns of its missing tiles: the generator is
// counter-based, so those columns come out exactly as in a full stripe.
// Adds the payload of the tiles it writes to `bytes` via `counter`.
caf::error write_tiles(store& s, const model::model_spec& spec,
                       const tensor_source& source, tensor_id id,
                       tile_rect rect, std::vector<bool>& written,
                       std::string_view marker_key,
                       std::string_view marker_value, const init_options& opt,
                       detail::payload_counter& counter, uint64_t& bytes) {
  auto shape = model::shape_of(spec, id.kind);
  auto tile = opt.tile;
  uint32_t n_ct = col_tiles(shape, tile);
  store::batch batch;
  std::string value;
  for (uint32_t rt = rect.rt_begin; rt < rect.rt_end; ++rt) {
    auto missing = [&](uint32_t ct) {
      return !written[size_t{rt} * n_ct + ct];
    };
    uint32_t first = rect.ct_begin;
    while (first < rect.ct_end && !missing(first))
      ++first;
    uint32_t last = rect.ct_end;
    while (last > first && !missing(last - 1))
      --last;
    if (first == last)
      continue;
    uint32_t row0 = rt * tile.rows;
    uint32_t rows = std::min(tile.rows, shape.rows - row0);
    auto stripe = source(id, {row0, row0 + rows, first * tile.cols,
                              std::min(last * tile.cols, shape.cols)});
    if (!stripe)
      return stripe.error();
    for (uint32_t ct = first; ct < last; ++ct) {
      if (!missing(ct))
        continue;
      uint32_t col0 = ct * tile.cols;
      uint32_t cols = std::min(tile.cols, shape.cols - col0);
      detail::tile_key key{id, rt, ct};
      detail::encode_tile(key, *stripe, row0, col0, rows, cols, value);
      batch.put(column::weights, detail::encode_key(key), value);
      written[size_t{rt} * n_ct + ct] = true;
      bytes += counter.add(rt, ct);
    }
    if (batch.size_bytes() >= opt.batch_bytes && rt + 1 < rect.rt_end) {
      if (auto err = s.write_unlogged(batch))
        return err;
      batch = store::batch{};
    }
  }
  batch.put(column::meta, marker_key, marker_value);
  return s.write_unlogged(batch);
}

caf::error write_manifest(store& s, const weights_manifest& m) {
  store::batch b;
  b.put(column::meta, detail::manifest_key, detail::encode_manifest(m));
  return s.write(b, true);
}

// Keys in `meta` after `prefix`, e.g. the names of done tensors.
caf::expected<std::set<std::string>> markers(const store& s,
                                             std::string_view prefix) {
  std::set<std::string> out;
  if (auto err = s.scan(column::meta, prefix,
                        [&](std::string_view key, std::string_view) {
                          out.emplace(key.substr(prefix.size()));
                          return true;
                        }))
    return err;
  return out;
}

caf::error stopped(const store& s, const weights_manifest& m, size_t done,
                   size_t total, const char* what) {
  return caf::make_error(
      errc::incomplete,
      "weights init of " + m.spec.name + (m.partial ? " (partial)" : "") +
          " into " + s.dir().string() + " stopped after " +
          std::to_string(done) + " of " + std::to_string(total) + " " + what +
          "; run weights init again to resume");
}

// Every tensor, skipping the done ones (all of them when `complete`).
caf::error write_full(store& s, const weights_manifest& m,
                      const tensor_source& source, bool complete,
                      const init_callback& progress, const init_options& opt,
                      init_report& report) {
  auto done = markers(s, detail::done_prefix);
  if (!done)
    return done.error();
  const auto& spec = m.spec;
  auto ids = model::stored_tensors(spec);
  init_progress p;
  p.tensors_total = p.shards_total = ids.size();
  for (auto id : ids)
    p.bytes_total += model::tensor_bytes(spec, id.kind);
  for (auto id : ids) {
    auto shape = model::shape_of(spec, id.kind);
    p.tensor = id;
    p.range = model::whole(shape);
    p.skipped = complete || done->count(model::to_string(id)) > 0;
    if (p.skipped) {
      ++report.tensors_skipped;
    } else {
      tile_rect all{0, row_tiles(shape, opt.tile), 0,
                    col_tiles(shape, opt.tile)};
      std::vector<bool> written(all.tiles(), false);
      detail::payload_counter counter{shape, model::dtype_of(spec, id.kind),
                                      opt.tile};
      if (auto err = write_tiles(s, spec, source, id, all, written,
                                 detail::done_key(id),
                                 std::to_string(all.tiles()), opt, counter,
                                 report.bytes_written))
        return err;
      ++report.tensors_written;
    }
    p.tensors_done = ++p.shards_done;
    p.bytes_done += model::tensor_bytes(spec, id.kind);
    if (progress && !progress(p) && p.tensors_done < p.tensors_total) {
      // Make the finished tensors durable, so a resume skips them even if
      // this process is killed next.
      if (auto err = s.flush())
        return err;
      return stopped(s, m, p.tensors_done, p.tensors_total, "tensors");
    }
  }
  report.shards_written = report.tensors_written;
  report.shards_skipped = report.tensors_skipped;
  return {};
}

// The manifest's shards in its (canonical) order, skipping done ones (all of
// them when `complete`). A tile covered by several shards is written once:
// by the first shard not yet done, or not at all when a done shard covers it.
caf::error write_partial(store& s, const weights_manifest& m,
                         const tensor_source& source, bool complete,
                         const init_callback& progress, const init_options& opt,
                         init_report& report) {
  auto done = markers(s, detail::shard_done_prefix);
  if (!done)
    return done.error();
  const auto& spec = m.spec;
  struct tensor_work {
    std::vector<bool> written; // tiles on disk (done shards) or written now
    detail::payload_counter total, attributed, this_run;
    size_t shards_left = 0;
    bool wrote = false;
  };
  std::map<uint64_t, tensor_work> work;
  init_progress p;
  p.shards_total = m.shards.size();
  auto is_done = [&](const tensor_shard& sh) {
    return complete ||
           done->count(detail::shard_done_key(sh.first, sh.second)
                           .substr(detail::shard_done_prefix.size())) > 0;
  };
  for (const auto& sh : m.shards) {
    auto id = sh.first;
    auto shape = model::shape_of(spec, id.kind);
    auto type = model::dtype_of(spec, id.kind);
    auto [it, fresh] = work.try_emplace(
        detail::tensor_key(id),
        tensor_work{std::vector<bool>(size_t{row_tiles(shape, opt.tile)} *
                                          col_tiles(shape, opt.tile),
                                      false),
                    {shape, type, opt.tile},
                    {shape, type, opt.tile},
                    {shape, type, opt.tile}});
    auto& w = it->second;
    ++w.shards_left;
    auto rect = detail::cover(sh.second, opt.tile);
    uint32_t n_ct = col_tiles(shape, opt.tile);
    bool shard_done = is_done(sh);
    for (uint32_t rt = rect.rt_begin; rt < rect.rt_end; ++rt)
      for (uint32_t ct = rect.ct_begin; ct < rect.ct_end; ++ct) {
        p.bytes_total += w.total.add(rt, ct);
        if (shard_done)
          w.written[size_t{rt} * n_ct + ct] = true;
      }
  }
  p.tensors_total = work.size();

  for (const auto& sh : m.shards) {
    auto& [id, range] = sh;
    auto& w = work.at(detail::tensor_key(id));
    auto rect = detail::cover(range, opt.tile);
    p.tensor = id;
    p.range = range;
    p.skipped = is_done(sh);
    if (p.skipped) {
      ++report.shards_skipped;
    } else {
      if (auto err = write_tiles(s, spec, source, id, rect, w.written,
                                 detail::shard_done_key(id, range),
                                 std::to_string(rect.tiles()), opt, w.this_run,
                                 report.bytes_written))
        return err;
      ++report.shards_written;
      w.wrote = true;
    }
    for (uint32_t rt = rect.rt_begin; rt < rect.rt_end; ++rt)
      for (uint32_t ct = rect.ct_begin; ct < rect.ct_end; ++ct)
        p.bytes_done += w.attributed.add(rt, ct);
    ++p.shards_done;
    if (--w.shards_left == 0) {
      ++p.tensors_done;
      ++(w.wrote ? report.tensors_written : report.tensors_skipped);
    }
    if (progress && !progress(p) && p.shards_done < p.shards_total) {
      if (auto err = s.flush())
        return err;
      return stopped(s, m, p.shards_done, p.shards_total, "shards");
    }
  }
  return {};
}

caf::expected<init_report> init(store& s, const model::model_spec& spec,
                                uint64_t seed, const shard_list* shards,
                                const init_callback& progress,
                                const init_options& options,
                                const std::string& source_name = {},
                                const tensor_source* source = nullptr) {
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
  weights_manifest want;
  want.spec = spec;
  want.seed = seed;
  want.source = source_name;
  want.tile = options.tile;
  if (shards) {
    if (auto err = detail::check_shards(spec, *shards))
      return err;
    want.partial = true;
    want.shards = detail::canonical(spec, *shards);
  }

  auto have = read_manifest(s);
  if (!have)
    return have.error();
  if (*have) {
    auto& m = **have;
    if (m.spec != spec || m.seed != seed || m.source != source_name ||
        m.tile != options.tile)
      return caf::make_error(errc::mismatch,
                             "store " + s.dir().string() + " holds " +
                                 describe(m) + "; asked for " + describe(want) +
                                 ": use another --db or delete this one");
    // A store only grows: it is asked to hold the union of what it was
    // asked before and now.
    if (!m.partial) {
      // A full store holds every shard; finish it if it is unfinished.
      want.partial = false;
      want.shards.clear();
      want.state = m.state;
    } else if (!want.partial) {
      // Partial -> full. The per-tensor path knows nothing of shard
      // markers: drop them with the manifest change (one synced batch) and
      // rewrite every tensor (tiles already there get the same bytes).
      auto old = markers(s, detail::shard_done_prefix);
      if (!old)
        return old.error();
      store::batch b;
      for (const auto& name : *old)
        b.erase(column::meta, std::string{detail::shard_done_prefix} + name);
      b.put(column::meta, detail::manifest_key, detail::encode_manifest(want));
      if (auto err = s.write(b, true))
        return err;
    } else {
      auto merged = m.shards;
      merged.insert(merged.end(), want.shards.begin(), want.shards.end());
      want.shards = detail::canonical(spec, std::move(merged));
      if (want.shards == m.shards)
        want.state = m.state; // nothing new: resume, or nothing to do
      else if (auto err = write_manifest(s, want))
        return err; // (in_progress: the new shards are not there yet)
    }
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

  init_report report;
  bool complete = want.state == init_state::complete;
  auto src = generated(want, source);
  auto err = want.partial ? write_partial(s, want, src, complete, progress,
                                          options, report)
                          : write_full(s, want, src, complete, progress,
                                       options, report);
  if (err)
    return err;
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

} // namespace

caf::expected<init_report> init_weights(store& s, const model::model_spec& spec,
                                        uint64_t seed,
                                        const init_callback& progress,
                                        const init_options& options) {
  return init(s, spec, seed, nullptr, progress, options);
}

caf::expected<init_report>
init_weight_shards(store& s, const model::model_spec& spec, uint64_t seed,
                   const shard_list& shards, const init_callback& progress,
                   const init_options& options) {
  return init(s, spec, seed, &shards, progress, options);
}

caf::expected<init_report>
import_weights(store& s, const model::model_spec& spec,
               const std::string& source_name, const tensor_source& source,
               const init_callback& progress, const init_options& options) {
  if (source_name.empty())
    return caf::make_error(errc::invalid_argument,
                           "import_weights: an import needs a source name");
  return init(s, spec, 0, nullptr, progress, options, source_name, &source);
}

caf::expected<init_report>
import_weight_shards(store& s, const model::model_spec& spec,
                     const std::string& source_name,
                     const tensor_source& source, const shard_list& shards,
                     const init_callback& progress,
                     const init_options& options) {
  if (source_name.empty())
    return caf::make_error(errc::invalid_argument,
                           "import_weight_shards: an import needs a source "
                           "name");
  return init(s, spec, 0, &shards, progress, options, source_name, &source);
}

} // namespace lockstep::storage
