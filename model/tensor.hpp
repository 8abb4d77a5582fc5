#pragma once

// A weight tensor, or a shard of one, in its storage dtype. Shards are what
// chips hold: a row range (output features) and a column range (reduction
// dimension, on block boundaries) of the full tensor.
//
// Layout: row-major over the shard, `cols()` elements per row, each element
// `element_bytes(type)` bytes (IEEE binary16 / bfloat16 bit patterns for
// f16/bf16, two's-complement int8). int8 tensors carry one f32 scale per row
// of the *full* row (a column shard keeps its rows' scales), so a value is
// `float(q) * scale[row]` wherever it is computed.

#include "model/model_spec.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace lockstep::model {

/// A rectangle of a tensor: rows [row_begin, row_end) x cols [col_begin,
/// col_end).
struct shard_range {
  uint32_t row_begin = 0;
  uint32_t row_end = 0;
  uint32_t col_begin = 0;
  uint32_t col_end = 0;

  uint32_t rows() const { return row_end - row_begin; }
  uint32_t cols() const { return col_end - col_begin; }
  friend bool operator==(const shard_range&, const shard_range&) = default;
};

/// The whole of a tensor of `shape`.
inline shard_range whole(tensor_shape shape) {
  return {0, shape.rows, 0, shape.cols};
}

/// Checks that `r` is non-empty, inside `shape`, and that its column bounds
/// lie on reduction-block boundaries (or at the tensor's end).
caf::error check_shard(tensor_shape shape, const shard_range& r);

/// Bytes of the elements of shard `r` in `type` (scales not included).
uint64_t shard_data_bytes(dtype type, const shard_range& r);
/// Bytes of the per-row scales of shard `r` (int8: 4 per row; else 0).
uint64_t shard_scale_bytes(dtype type, const shard_range& r);

/// A read-only view of a shard laid out as `tensor` lays it out (row-major,
/// `row_bytes()` per row, one f32 scale per row for int8), in memory someone
/// else owns: a `tensor`, or a chip's SRAM arena where the plan put it.
/// Cheap to copy. The memory must outlive the view.
class tensor_view {
public:
  tensor_view() = default;
  /// REQUIRES: `data` holds shard_data_bytes(type, range) bytes and, for
  /// int8, `scales` holds range.rows() floats (4-byte aligned).
  tensor_view(tensor_shape full_shape, dtype type, shard_range range,
              const std::byte* data, const float* scales);

  dtype type() const noexcept { return type_; }
  tensor_shape full_shape() const noexcept { return full_shape_; }
  const shard_range& range() const noexcept { return range_; }
  uint32_t rows() const noexcept { return range_.rows(); }
  uint32_t cols() const noexcept { return range_.cols(); }
  size_t row_bytes() const noexcept { return row_bytes_; }
  bool empty() const noexcept { return data_ == nullptr; }

  std::span<const std::byte> row(uint32_t r) const noexcept {
    return {data_ + size_t{r} * row_bytes_, row_bytes_};
  }
  std::span<const std::byte> bytes() const noexcept {
    return {data_, row_bytes_ * range_.rows()};
  }
  /// Per-row scales (int8 only; empty otherwise), indexed by local row.
  std::span<const float> scales() const noexcept {
    return {scales_, scales_ == nullptr ? 0 : size_t{range_.rows()}};
  }

  /// Converts local row `r`, local columns [c, c + n), to f32 in `out`. This
  /// is the only dequantisation in lockstep, so every chip gets the same
  /// values. REQUIRES: c + n <= cols(), out.size() >= n.
  void to_f32(uint32_t r, uint32_t c, uint32_t n, float* out) const;

private:
  tensor_shape full_shape_;
  dtype type_ = dtype::f32;
  shard_range range_;
  size_t row_bytes_ = 0;
  const std::byte* data_ = nullptr;
  const float* scales_ = nullptr;
};

class tensor {
public:
  tensor() = default;

  /// Zero-initialised shard `range` of a tensor of `full_shape`.
  /// REQUIRES: check_shard(full_shape, range) succeeds.
  tensor(tensor_shape full_shape, dtype type, shard_range range);

  dtype type() const noexcept { return type_; }
  tensor_shape full_shape() const noexcept { return full_shape_; }
  const shard_range& range() const noexcept { return range_; }
  uint32_t rows() const noexcept { return range_.rows(); }
  uint32_t cols() const noexcept { return range_.cols(); }

  /// Bytes of one stored row of this shard.
  size_t row_bytes() const noexcept { return row_bytes_; }

  /// Raw bytes of local row `r` (0-based within the shard).
  std::span<std::byte> row(uint32_t r) noexcept {
    return {data_.data() + size_t{r} * row_bytes_, row_bytes_};
  }
  std::span<const std::byte> row(uint32_t r) const noexcept {
    return {data_.data() + size_t{r} * row_bytes_, row_bytes_};
  }
  std::span<std::byte> bytes() noexcept { return data_; }
  std::span<const std::byte> bytes() const noexcept { return data_; }

  /// Per-row scales (int8 only; empty otherwise), indexed by local row.
  std::span<float> scales() noexcept { return scales_; }
  std::span<const float> scales() const noexcept { return scales_; }

  /// This tensor as a view (valid while the tensor lives and is not moved).
  tensor_view view() const noexcept {
    return {full_shape_, type_, range_, data_.data(),
            scales_.empty() ? nullptr : scales_.data()};
  }

  /// view().to_f32(r, c, n, out).
  void to_f32(uint32_t r, uint32_t c, uint32_t n, float* out) const {
    view().to_f32(r, c, n, out);
  }

  /// Copies the part of `src` that overlaps this shard into this shard.
  /// REQUIRES: same full shape and dtype.
  void copy_overlap_from(const tensor& src);

  friend bool operator==(const tensor& a, const tensor& b);

private:
  tensor_shape full_shape_;
  dtype type_ = dtype::f32;
  shard_range range_;
  size_t row_bytes_ = 0;
  std::vector<std::byte> data_;
  std::vector<float> scales_;
};

/// IEEE-754 conversions written out so that they do not depend on the
/// compiler or CPU (round to nearest even; NaN stays NaN).
uint16_t f32_to_f16_bits(float x);
float f16_bits_to_f32(uint16_t h);
uint16_t f32_to_bf16_bits(float x);
float bf16_bits_to_f32(uint16_t h);

} // namespace lockstep::model
