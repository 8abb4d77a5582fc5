#pragma once

// Which tiles a shard touches, and which tiles a partial store holds
// (docs/storage.md, "Partial stores"). A shard's rows need not be
// tile-aligned (a vocabulary slice), so it covers every tile it touches,
// whole: a partial store always holds whole tiles.

#include "storage/weight_store.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace lockstep::storage::detail {

/// Row tiles [rt_begin, rt_end) x column tiles [ct_begin, ct_end).
struct tile_rect {
  uint32_t rt_begin = 0;
  uint32_t rt_end = 0;
  uint32_t ct_begin = 0;
  uint32_t ct_end = 0;
  uint64_t tiles() const {
    return uint64_t{rt_end - rt_begin} * (ct_end - ct_begin);
  }
  bool contains(uint32_t rt, uint32_t ct) const {
    return rt >= rt_begin && rt < rt_end && ct >= ct_begin && ct < ct_end;
  }
};

/// The tiles `range` touches. REQUIRES: range is non-empty.
tile_rect cover(const model::shard_range& range, tile_shape tile);

/// Payload bytes of a set of tiles of one tensor, counted as
/// model::tensor_bytes counts a whole tensor: the elements, and an int8 row's
/// scale once (every tile of the row carries it, but it is one number).
/// So the tiles of a whole tensor add up to tensor_bytes.
class payload_counter {
public:
  payload_counter(model::tensor_shape shape, model::dtype type,
                  tile_shape tile);
  /// The bytes tile (rt, ct) adds; 0 when it was added before.
  /// REQUIRES: the tile lies inside the tensor's grid.
  uint64_t add(uint32_t rt, uint32_t ct);

private:
  model::tensor_shape shape_;
  model::dtype type_;
  tile_shape tile_;
  uint32_t n_ct_;
  std::vector<bool> tile_added_; // row-major over the grid
  std::vector<bool> row_added_;  // per row tile: its scales counted
};

/// A map key for a tensor id, ordered as the tile keys are.
inline uint64_t tensor_key(model::tensor_id id) {
  return (uint64_t{id.layer} << 8) | static_cast<uint64_t>(id.kind);
}

/// "l3.wq rows [0,128) cols [0,512)" — how shards are named in messages.
std::string shard_name(model::tensor_id id, const model::shard_range& range);

/// The meta key of a partial init's per-shard done marker:
/// "weights.shard_done.l3.wq[0,128)x[0,512)".
std::string shard_done_key(model::tensor_id id,
                           const model::shard_range& range);

/// Checks every shard: a tensor of `spec`, a valid range of it
/// (model::check_shard). Errors: invalid_argument naming the shard.
caf::error check_shards(const model::model_spec& spec, const shard_list& l);

/// `l` in the model's canonical tensor order, then by range, without
/// duplicates: the order a partial init writes in and the manifest lists.
/// REQUIRES: check_shards(spec, l) succeeds.
shard_list canonical(const model::model_spec& spec, shard_list l);

/// The tiles a set of shards covers, per tensor. Immutable once built.
class held_tiles {
public:
  held_tiles() = default;
  /// REQUIRES: every range is non-empty.
  held_tiles(tile_shape tile, const shard_list& shards);

  /// True when every tile `range` of `id` touches is covered.
  bool holds(model::tensor_id id, const model::shard_range& range) const;
  bool holds_tile(model::tensor_id id, uint32_t rt, uint32_t ct) const;
  /// Tiles of `id` covered (each counted once however many shards cover it).
  uint64_t count(model::tensor_id id) const;
  /// The covers of `id`'s shards (possibly overlapping).
  const std::vector<tile_rect>& rects(model::tensor_id id) const;
  /// Calls fn(rt, ct) once for each covered tile of `id`, row tile by row
  /// tile.
  template <class F>
  void for_each(model::tensor_id id, F&& fn) const {
    for (auto [rt, b, e] : spans(id))
      for (uint32_t ct = b; ct < e; ++ct)
        fn(rt, ct);
  }

private:
  // Disjoint column-tile spans [b, e) of row tile rt covering `id`'s tiles.
  std::vector<std::tuple<uint32_t, uint32_t, uint32_t>>
  spans(model::tensor_id id) const;

  tile_shape tile_;
  std::map<uint64_t, std::vector<tile_rect>> rects_;
};

} // namespace lockstep::storage::detail
