#pragma once

// Keys and values of the `weights` column family (docs/storage.md).
//
// Key (11 bytes, big-endian so that RocksDB's bytewise order is numeric
// order): layer u16 | tensor kind u8 | row tile u32 | column tile u32.
// A tensor's tiles are therefore contiguous, row tile by row tile, and the
// tiles of one row tile are contiguous column tile by column tile.
//
// Value (little-endian):
//   0  u8  value format (tile_value_format)
//   1  u8  dtype
//   2  u16 layer          } the key's coordinates again, so a value copied
//   4  u8  tensor kind    } under another key is caught
//   5  u8[3] zero
//   8  u32 row tile       }
//   12 u32 column tile    }
//   16 u32 rows of this tile (edge tiles may be smaller)
//   20 u32 columns of this tile
//   24 rows x cols elements, row-major, in the dtype
//   .. int8 only: rows f32 scales (of the full rows, as in model::tensor)
//   .. u64 XXH3-64 (lockstep::checksum64) of every byte before it

#include "model/tensor.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lockstep::storage::detail {

inline constexpr uint8_t tile_value_format = 1;
inline constexpr size_t tile_key_bytes = 11;
inline constexpr size_t tile_header_bytes = 24;
inline constexpr size_t tile_trailer_bytes = 8;

struct tile_key {
  model::tensor_id tensor;
  uint32_t row_tile = 0;
  uint32_t col_tile = 0;
  friend bool operator==(const tile_key&, const tile_key&) = default;
};

std::string encode_key(const tile_key& k);
/// The 3-byte prefix shared by all tiles of `id`.
std::string tensor_prefix(model::tensor_id id);
/// Errors: corrupt (wrong length or unknown tensor kind).
caf::expected<tile_key> decode_key(std::string_view key);

/// "(2,5)" — how tiles are named in messages.
std::string tile_name(uint32_t row_tile, uint32_t col_tile);

/// Encodes the tile `k`: rows [row0, row0 + rows) x cols [col0, col0 + cols)
/// of the full tensor, taken from `src`, into `out` (replacing its contents).
/// REQUIRES: that rectangle lies inside src.range().
void encode_tile(const tile_key& k, const model::tensor& src, uint32_t row0,
                 uint32_t col0, uint32_t rows, uint32_t cols, std::string& out);

/// Bytes of an encoded tile of `rows` x `cols` elements of `type`.
size_t encoded_tile_bytes(model::dtype type, uint32_t rows, uint32_t cols);

/// A decoded value; the spans point into the value passed to decode_tile.
struct tile_view {
  model::dtype type = model::dtype::f32;
  tile_key key;
  uint32_t rows = 0;
  uint32_t cols = 0;
  std::string_view data;   // rows * cols * element_bytes(type)
  std::string_view scales; // rows * 4 bytes (int8), else empty
};

/// Checks the checksum and the value's internal consistency. The error
/// (corrupt) says what is wrong but not which tile: the caller names it.
caf::expected<tile_view> decode_tile(std::string_view value);

/// Copies the part of `tile` that overlaps `dst`'s shard into `dst` (data
/// and, for int8, the row scales). `row0` / `col0`: the tile's first row and
/// column in the full tensor. REQUIRES: tile.type == dst.type().
void copy_tile_into(const tile_view& tile, uint32_t row0, uint32_t col0,
                    model::tensor& dst);

} // namespace lockstep::storage::detail
