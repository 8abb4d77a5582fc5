#include "model/tensor.hpp"

#include "model/block_rule.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace lockstep::model {

caf::error check_shard(tensor_shape shape, const shard_range& r) {
  auto bad = [&](const std::string& what) {
    return caf::make_error(errc::invalid_shard,
                           "shard rows [" + std::to_string(r.row_begin) + "," +
                               std::to_string(r.row_end) + ") cols [" +
                               std::to_string(r.col_begin) + "," +
                               std::to_string(r.col_end) + ") of a " +
                               std::to_string(shape.rows) + "x" +
                               std::to_string(shape.cols) + " tensor: " + what);
  };
  if (r.row_begin >= r.row_end || r.col_begin >= r.col_end)
    return bad("empty");
  if (r.row_end > shape.rows || r.col_end > shape.cols)
    return bad("outside the tensor");
  auto on_block = [&](uint32_t c) {
    return c % reduction_block_elems == 0 || c == shape.cols;
  };
  if (!on_block(r.col_begin) || !on_block(r.col_end))
    return bad("column bounds must lie on reduction-block boundaries (" +
               std::to_string(reduction_block_elems) + ")");
  return {};
}

tensor::tensor(tensor_shape full_shape, dtype type, shard_range range)
    : full_shape_(full_shape)
    , type_(type)
    , range_(range)
    , row_bytes_(size_t{range.cols()} * element_bytes(type))
    , data_(row_bytes_ * range.rows()) {
  if (type == dtype::int8)
    scales_.resize(range.rows());
}

uint64_t shard_data_bytes(dtype type, const shard_range& r) {
  return uint64_t{r.rows()} * r.cols() * element_bytes(type);
}

uint64_t shard_scale_bytes(dtype type, const shard_range& r) {
  return type == dtype::int8 ? uint64_t{r.rows()} * 4 : 0;
}

tensor_view::tensor_view(tensor_shape full_shape, dtype type,
                         shard_range range, const std::byte* data,
                         const float* scales)
    : full_shape_(full_shape)
    , type_(type)
    , range_(range)
    , row_bytes_(size_t{range.cols()} * element_bytes(type))
    , data_(data)
    , scales_(type == dtype::int8 ? scales : nullptr) {}

void tensor_view::to_f32(uint32_t r, uint32_t c, uint32_t n,
                         float* out) const {
  const std::byte* base = data_ + size_t{r} * row_bytes_;
  switch (type_) {
  case dtype::f32:
    std::memcpy(out, base + size_t{c} * 4, size_t{n} * 4);
    break;
  case dtype::f16: {
    auto* p = reinterpret_cast<const uint16_t*>(base) + c;
    for (uint32_t i = 0; i < n; ++i)
      out[i] = f16_bits_to_f32(p[i]);
    break;
  }
  case dtype::bf16: {
    auto* p = reinterpret_cast<const uint16_t*>(base) + c;
    for (uint32_t i = 0; i < n; ++i)
      out[i] = bf16_bits_to_f32(p[i]);
    break;
  }
  case dtype::int8: {
    auto* p = reinterpret_cast<const int8_t*>(base) + c;
    float s = scales_[r];
    for (uint32_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(p[i]) * s;
    break;
  }
  }
}

void tensor::copy_overlap_from(const tensor& src) {
  uint32_t r0 = std::max(range_.row_begin, src.range_.row_begin);
  uint32_t r1 = std::min(range_.row_end, src.range_.row_end);
  uint32_t c0 = std::max(range_.col_begin, src.range_.col_begin);
  uint32_t c1 = std::min(range_.col_end, src.range_.col_end);
  if (r0 >= r1 || c0 >= c1)
    return;
  size_t eb = element_bytes(type_);
  for (uint32_t r = r0; r < r1; ++r) {
    auto dst_row = row(r - range_.row_begin);
    auto src_row = src.row(r - src.range_.row_begin);
    std::memcpy(dst_row.data() + (c0 - range_.col_begin) * eb,
                src_row.data() + (c0 - src.range_.col_begin) * eb,
                (c1 - c0) * eb);
    if (type_ == dtype::int8)
      scales_[r - range_.row_begin] = src.scales_[r - src.range_.row_begin];
  }
}

bool operator==(const tensor& a, const tensor& b) {
  return a.full_shape_ == b.full_shape_ && a.type_ == b.type_ &&
         a.range_ == b.range_ && a.data_ == b.data_ &&
         std::equal(a.scales_.begin(), a.scales_.end(), b.scales_.begin(),
                    b.scales_.end(), [](float x, float y) {
                      return std::bit_cast<uint32_t>(x) ==
                             std::bit_cast<uint32_t>(y);
                    });
}

// --- Half-precision conversions
// ------------------------------------------------

uint16_t f32_to_f16_bits(float x) {
  uint32_t f = std::bit_cast<uint32_t>(x);
  uint32_t sign = (f >> 16) & 0x8000u;
  uint32_t exp = (f >> 23) & 0xFFu;
  uint32_t mant = f & 0x7FFFFFu;
  if (exp == 0xFF) // inf or NaN (keep NaN quiet and non-zero)
    return static_cast<uint16_t>(sign | 0x7C00u | (mant ? 0x200u : 0u));
  int32_t e = static_cast<int32_t>(exp) - 127 + 15;
  if (e >= 0x1F) // overflow to inf
    return static_cast<uint16_t>(sign | 0x7C00u);
  if (e <= 0) { // subnormal or zero
    if (e < -10)
      return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1u)))
      ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u)))
    ++half; // may carry into the exponent, which is the correct rounding
  return static_cast<uint16_t>(sign | half);
}

float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t{h} & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t f;
  if (exp == 0) {
    if (mant == 0) {
      f = sign;
    } else { // subnormal: normalise
      int32_t e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      f = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) |
          ((mant & 0x3FFu) << 13);
    }
  } else if (exp == 0x1F) {
    f = sign | 0x7F800000u | (mant << 13);
  } else {
    f = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(f);
}

uint16_t f32_to_bf16_bits(float x) {
  uint32_t f = std::bit_cast<uint32_t>(x);
  if ((f & 0x7F800000u) == 0x7F800000u && (f & 0x7FFFFFu))
    return static_cast<uint16_t>((f >> 16) | 0x40u); // quiet NaN
  uint32_t rounding = 0x7FFFu + ((f >> 16) & 1u);
  return static_cast<uint16_t>((f + rounding) >> 16);
}

float bf16_bits_to_f32(uint16_t h) {
  return std::bit_cast<float>(uint32_t{h} << 16);
}

} // namespace lockstep::model
