#include "storage/detail/tile_codec.hpp"

#include "common/digest.hpp"
#include "storage/errc.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace lockstep::storage::detail {

namespace {

static_assert(std::endian::native == std::endian::little,
              "tile values are written in host order, which must be LE");

void put_be(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

uint64_t get_be(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v = (v << 8) | static_cast<uint8_t>(in[at + i]);
  return v;
}

template <class T>
void put_le(char* at, T v) {
  std::memcpy(at, &v, sizeof(T));
}

template <class T>
T get_le(std::string_view in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  return v;
}

constexpr uint8_t max_kind = static_cast<uint8_t>(model::tensor_kind::lm_head);
constexpr uint8_t max_dtype = static_cast<uint8_t>(model::dtype::int8);

caf::error corrupt(const std::string& what) {
  return caf::make_error(errc::corrupt, what);
}

} // namespace

std::string encode_key(const tile_key& k) {
  std::string out;
  out.reserve(tile_key_bytes);
  put_be(out, k.tensor.layer, 2);
  put_be(out, static_cast<uint8_t>(k.tensor.kind), 1);
  put_be(out, k.row_tile, 4);
  put_be(out, k.col_tile, 4);
  return out;
}

std::string tensor_prefix(model::tensor_id id) {
  std::string out;
  put_be(out, id.layer, 2);
  put_be(out, static_cast<uint8_t>(id.kind), 1);
  return out;
}

caf::expected<tile_key> decode_key(std::string_view key) {
  if (key.size() != tile_key_bytes)
    return corrupt("key of " + std::to_string(key.size()) +
                   " bytes (tile keys have " + std::to_string(tile_key_bytes) +
                   ")");
  auto kind = static_cast<uint8_t>(get_be(key, 2, 1));
  if (kind > max_kind)
    return corrupt("key with unknown tensor kind " + std::to_string(kind));
  tile_key k;
  k.tensor.layer = static_cast<uint32_t>(get_be(key, 0, 2));
  k.tensor.kind = static_cast<model::tensor_kind>(kind);
  k.row_tile = static_cast<uint32_t>(get_be(key, 3, 4));
  k.col_tile = static_cast<uint32_t>(get_be(key, 7, 4));
  return k;
}

std::string tile_name(uint32_t row_tile, uint32_t col_tile) {
  return "(" + std::to_string(row_tile) + "," + std::to_string(col_tile) + ")";
}

size_t encoded_tile_bytes(model::dtype type, uint32_t rows, uint32_t cols) {
  size_t n = tile_header_bytes + size_t{rows} * cols * element_bytes(type) +
             tile_trailer_bytes;
  if (type == model::dtype::int8)
    n += size_t{rows} * sizeof(float);
  return n;
}

void encode_tile(const tile_key& k, const model::tensor& src, uint32_t row0,
                 uint32_t col0, uint32_t rows, uint32_t cols,
                 std::string& out) {
  auto type = src.type();
  out.resize(encoded_tile_bytes(type, rows, cols));
  char* p = out.data();
  std::memset(p, 0, tile_header_bytes);
  put_le<uint8_t>(p + 0, tile_value_format);
  put_le<uint8_t>(p + 1, static_cast<uint8_t>(type));
  put_le<uint16_t>(p + 2, static_cast<uint16_t>(k.tensor.layer));
  put_le<uint8_t>(p + 4, static_cast<uint8_t>(k.tensor.kind));
  put_le<uint32_t>(p + 8, k.row_tile);
  put_le<uint32_t>(p + 12, k.col_tile);
  put_le<uint32_t>(p + 16, rows);
  put_le<uint32_t>(p + 20, cols);
  char* d = p + tile_header_bytes;
  const auto& r = src.range();
  size_t eb = element_bytes(type);
  size_t tile_row_bytes = size_t{cols} * eb;
  for (uint32_t i = 0; i < rows; ++i) {
    auto row = src.row(row0 + i - r.row_begin);
    std::memcpy(d, row.data() + size_t{col0 - r.col_begin} * eb,
                tile_row_bytes);
    d += tile_row_bytes;
  }
  if (type == model::dtype::int8) {
    std::memcpy(d, src.scales().data() + (row0 - r.row_begin),
                size_t{rows} * sizeof(float));
    d += size_t{rows} * sizeof(float);
  }
  auto sum =
      checksum64(std::as_bytes(std::span{p, static_cast<size_t>(d - p)}));
  put_le<uint64_t>(d, sum);
}

caf::expected<tile_view> decode_tile(std::string_view v) {
  if (v.size() < tile_header_bytes + tile_trailer_bytes)
    return corrupt("value of " + std::to_string(v.size()) +
                   " bytes is shorter than a tile header");
  auto body = v.substr(0, v.size() - tile_trailer_bytes);
  auto stored = get_le<uint64_t>(v, body.size());
  if (checksum64(std::as_bytes(std::span{body.data(), body.size()})) != stored)
    return corrupt("checksum mismatch");
  // The checksum matched, so what follows was written by an encoder; the
  // checks below catch encoders of other formats (and checksum collisions).
  auto format = get_le<uint8_t>(v, 0);
  if (format != tile_value_format)
    return corrupt("unknown value format " + std::to_string(format));
  auto type = get_le<uint8_t>(v, 1);
  auto kind = get_le<uint8_t>(v, 4);
  if (type > max_dtype)
    return corrupt("unknown dtype " + std::to_string(type));
  if (kind > max_kind)
    return corrupt("unknown tensor kind " + std::to_string(kind));
  tile_view t;
  t.type = static_cast<model::dtype>(type);
  t.key.tensor.layer = get_le<uint16_t>(v, 2);
  t.key.tensor.kind = static_cast<model::tensor_kind>(kind);
  t.key.row_tile = get_le<uint32_t>(v, 8);
  t.key.col_tile = get_le<uint32_t>(v, 12);
  t.rows = get_le<uint32_t>(v, 16);
  t.cols = get_le<uint32_t>(v, 20);
  uint64_t data_bytes =
      uint64_t{t.rows} * t.cols * model::element_bytes(t.type);
  uint64_t scale_bytes =
      t.type == model::dtype::int8 ? uint64_t{t.rows} * sizeof(float) : 0;
  if (tile_header_bytes + data_bytes + scale_bytes != body.size())
    return corrupt("value of " + std::to_string(v.size()) +
                   " bytes does not match its header (" +
                   std::to_string(t.rows) + "x" + std::to_string(t.cols) + " " +
                   model::to_string(t.type) + ")");
  t.data = body.substr(tile_header_bytes, data_bytes);
  t.scales = body.substr(tile_header_bytes + data_bytes, scale_bytes);
  return t;
}

void copy_tile_into(const tile_view& tile, uint32_t row0, uint32_t col0,
                    model::tensor& dst) {
  const auto& r = dst.range();
  uint32_t r0 = std::max(row0, r.row_begin);
  uint32_t r1 = std::min(row0 + tile.rows, r.row_end);
  uint32_t c0 = std::max(col0, r.col_begin);
  uint32_t c1 = std::min(col0 + tile.cols, r.col_end);
  if (r0 >= r1 || c0 >= c1)
    return;
  size_t eb = element_bytes(tile.type);
  size_t tile_row_bytes = size_t{tile.cols} * eb;
  for (uint32_t row = r0; row < r1; ++row) {
    const char* src = tile.data.data() + size_t{row - row0} * tile_row_bytes +
                      size_t{c0 - col0} * eb;
    std::memcpy(dst.row(row - r.row_begin).data() +
                    size_t{c0 - r.col_begin} * eb,
                src, size_t{c1 - c0} * eb);
    if (tile.type == model::dtype::int8)
      std::memcpy(&dst.scales()[row - r.row_begin],
                  tile.scales.data() + size_t{row - row0} * sizeof(float),
                  sizeof(float));
  }
}

} // namespace lockstep::storage::detail
