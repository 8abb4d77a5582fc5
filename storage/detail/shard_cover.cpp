#include "storage/detail/shard_cover.hpp"

#include "storage/detail/meta_keys.hpp"
#include "storage/errc.hpp"

#include <algorithm>
#include <tuple>

namespace lockstep::storage::detail {

namespace {

// The column-tile intervals of the rects covering row tile `rt`, sorted:
// whether they cover [ct_begin, ct_end), and their union.
struct row_cover {
  std::vector<std::pair<uint32_t, uint32_t>> spans;

  row_cover(const std::vector<tile_rect>& rects, uint32_t rt) {
    for (const auto& r : rects)
      if (rt >= r.rt_begin && rt < r.rt_end)
        spans.emplace_back(r.ct_begin, r.ct_end);
    std::sort(spans.begin(), spans.end());
  }

  bool covers(uint32_t ct_begin, uint32_t ct_end) const {
    uint32_t reached = ct_begin;
    for (auto [b, e] : spans) {
      if (b > reached)
        break;
      reached = std::max(reached, e);
      if (reached >= ct_end)
        return true;
    }
    return reached >= ct_end;
  }

  // The spans merged into disjoint ones, in order.
  std::vector<std::pair<uint32_t, uint32_t>> merged() const {
    std::vector<std::pair<uint32_t, uint32_t>> out;
    for (auto [b, e] : spans) {
      if (!out.empty() && b <= out.back().second)
        out.back().second = std::max(out.back().second, e);
      else
        out.emplace_back(b, e);
    }
    return out;
  }
};

const std::vector<tile_rect> no_rects;

} // namespace

tile_rect cover(const model::shard_range& r, tile_shape tile) {
  return {r.row_begin / tile.rows, (r.row_end - 1) / tile.rows + 1,
          r.col_begin / tile.cols, (r.col_end - 1) / tile.cols + 1};
}

payload_counter::payload_counter(model::tensor_shape shape, model::dtype type,
                                 tile_shape tile)
    : shape_(shape)
    , type_(type)
    , tile_(tile)
    , n_ct_(col_tiles(shape, tile))
    , tile_added_(size_t{row_tiles(shape, tile)} * n_ct_, false)
    , row_added_(row_tiles(shape, tile), false) {}

uint64_t payload_counter::add(uint32_t rt, uint32_t ct) {
  auto at = size_t{rt} * n_ct_ + ct;
  if (tile_added_[at])
    return 0;
  tile_added_[at] = true;
  uint32_t row0 = rt * tile_.rows;
  uint32_t col0 = ct * tile_.cols;
  model::shard_range r{row0, std::min(row0 + tile_.rows, shape_.rows), col0,
                       std::min(col0 + tile_.cols, shape_.cols)};
  uint64_t bytes = model::shard_data_bytes(type_, r);
  if (!row_added_[rt]) {
    row_added_[rt] = true;
    bytes += model::shard_scale_bytes(type_, r);
  }
  return bytes;
}

std::string shard_name(model::tensor_id id, const model::shard_range& r) {
  return model::to_string(id) + " rows [" + std::to_string(r.row_begin) + "," +
         std::to_string(r.row_end) + ") cols [" + std::to_string(r.col_begin) +
         "," + std::to_string(r.col_end) + ")";
}

std::string shard_done_key(model::tensor_id id, const model::shard_range& r) {
  return std::string{shard_done_prefix} + model::to_string(id) + "[" +
         std::to_string(r.row_begin) + "," + std::to_string(r.row_end) + ")x[" +
         std::to_string(r.col_begin) + "," + std::to_string(r.col_end) + ")";
}

caf::error check_shards(const model::model_spec& spec, const shard_list& l) {
  auto ids = model::all_tensors(spec);
  for (size_t i = 0; i < l.size(); ++i) {
    const auto& [id, range] = l[i];
    auto where =
        "shard " + std::to_string(i) + " (" + shard_name(id, range) + ")";
    if (std::find(ids.begin(), ids.end(), id) == ids.end())
      return caf::make_error(errc::invalid_argument,
                             where + ": tensor " + model::to_string(id) +
                                 " is not in model " + spec.name);
    if (auto err = model::check_shard(model::shape_of(spec, id.kind), range))
      return caf::make_error(errc::invalid_argument,
                             where + ": " + detail_of(err));
  }
  return {};
}

shard_list canonical(const model::model_spec& spec, shard_list l) {
  // A tied head's lm_head shards are tok_embedding's: held once.
  for (auto& sh : l)
    sh.first = model::stored_as(spec, sh.first);
  std::map<uint64_t, size_t> order;
  for (auto id : model::stored_tensors(spec))
    order.emplace(tensor_key(id), order.size());
  auto rank = [&](const tensor_shard& s) {
    const auto& r = s.second;
    return std::make_tuple(order.at(tensor_key(s.first)), r.row_begin,
                           r.row_end, r.col_begin, r.col_end);
  };
  std::sort(l.begin(), l.end(),
            [&](const auto& a, const auto& b) { return rank(a) < rank(b); });
  l.erase(std::unique(l.begin(), l.end()), l.end());
  return l;
}

held_tiles::held_tiles(tile_shape tile, const shard_list& shards)
    : tile_(tile) {
  for (const auto& [id, range] : shards)
    rects_[tensor_key(id)].push_back(cover(range, tile));
}

const std::vector<tile_rect>& held_tiles::rects(model::tensor_id id) const {
  auto it = rects_.find(tensor_key(id));
  return it == rects_.end() ? no_rects : it->second;
}

bool held_tiles::holds(model::tensor_id id,
                       const model::shard_range& range) const {
  if (range.row_begin >= range.row_end || range.col_begin >= range.col_end)
    return false;
  const auto& rs = rects(id);
  if (rs.empty())
    return false;
  auto want = cover(range, tile_);
  for (uint32_t rt = want.rt_begin; rt < want.rt_end; ++rt)
    if (!row_cover{rs, rt}.covers(want.ct_begin, want.ct_end))
      return false;
  return true;
}

bool held_tiles::holds_tile(model::tensor_id id, uint32_t rt,
                            uint32_t ct) const {
  for (const auto& r : rects(id))
    if (r.contains(rt, ct))
      return true;
  return false;
}

std::vector<std::tuple<uint32_t, uint32_t, uint32_t>>
held_tiles::spans(model::tensor_id id) const {
  std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> out;
  const auto& rs = rects(id);
  if (rs.empty())
    return out;
  uint32_t first = UINT32_MAX;
  uint32_t last = 0;
  for (const auto& r : rs) {
    first = std::min(first, r.rt_begin);
    last = std::max(last, r.rt_end);
  }
  for (uint32_t rt = first; rt < last; ++rt)
    for (auto [b, e] : row_cover{rs, rt}.merged())
      out.emplace_back(rt, b, e);
  return out;
}

uint64_t held_tiles::count(model::tensor_id id) const {
  uint64_t n = 0;
  for (auto [rt, b, e] : spans(id))
    n += e - b;
  return n;
}

} // namespace lockstep::storage::detail
