#include "model/kernels.hpp"

#include "model/det_math.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>

namespace lockstep::model {

namespace {

constexpr uint32_t B = reduction_block_elems;
constexpr uint32_t L = block_lanes;
static_assert(B % L == 0);

// The lane combine of the rule, written out so no compiler reassociates it.
inline float combine_lanes(const float* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
         ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Full blocks take the branch-free path the compiler vectorises: 8 lanes are
// two SSE (or one AVX) register of independent accumulators.
inline float full_block_dot(const float* a, const float* b) {
  float acc[L] = {};
  for (uint32_t j = 0; j < B; j += L)
    for (uint32_t l = 0; l < L; ++l)
      acc[l] += a[j + l] * b[j + l];
  return combine_lanes(acc);
}

inline float any_block_dot(const float* a, const float* b, uint32_t len) {
  if (len == B)
    return full_block_dot(a, b);
  float acc[L] = {};
  for (uint32_t j = 0; j < len; ++j)
    acc[j % L] += a[j] * b[j];
  return combine_lanes(acc);
}

// Scratch for block partials of one reduction, on the stack when small.
class partial_buffer {
public:
  explicit partial_buffer(size_t n) {
    if (n > small_.size())
      big_.resize(n);
    data_ = n > small_.size() ? big_.data() : small_.data();
    size_ = n;
  }
  std::span<float> span() { return {data_, size_}; }
  float* data() { return data_; }

private:
  std::array<float, 1024> small_;
  std::vector<float> big_;
  float* data_;
  size_t size_;
};

// Pointer to local row r of `w` as f32, converting into `tmp` if needed.
inline const float* row_f32(const tensor_view& w, uint32_t r,
                            std::vector<float>& tmp) {
  if (w.type() == dtype::f32)
    return reinterpret_cast<const float*>(w.row(r).data());
  w.to_f32(r, 0, w.cols(), tmp.data());
  return tmp.data();
}

} // namespace

float block_dot(const float* a, const float* b, uint32_t len) {
  return any_block_dot(a, b, len);
}

float block_sum(const float* v, uint32_t len) {
  float acc[L] = {};
  for (uint32_t j = 0; j < len; ++j)
    acc[j % L] += v[j];
  return combine_lanes(acc);
}

float dot(const float* a, const float* b, uint32_t n) {
  uint32_t nb = blocks_of(n);
  partial_buffer p{nb};
  for (uint32_t i = 0; i < nb; ++i)
    p.data()[i] = any_block_dot(a + i * B, b + i * B, std::min(B, n - i * B));
  return tree_reduce_in_place(p.span());
}

float sum(const float* v, uint32_t n) {
  uint32_t nb = blocks_of(n);
  partial_buffer p{nb};
  for (uint32_t i = 0; i < nb; ++i)
    p.data()[i] = block_sum(v + i * B, std::min(B, n - i * B));
  return tree_reduce_in_place(p.span());
}

namespace {

// The canonical pieces of a shard as block ranges relative to its first
// block: piece q sums local blocks [first[q], end[q]).
struct piece_layout {
  std::vector<tree_node> nodes;
  std::vector<uint32_t> first, end;
  uint32_t local_blocks = 0;
  uint32_t first_block = 0;
  uint32_t full_cols = 0;
};

piece_layout layout_of(const tensor_view& w) {
  piece_layout pl;
  pl.full_cols = w.full_shape().cols;
  uint32_t n_blocks = blocks_of(pl.full_cols);
  pl.first_block = w.range().col_begin / B;
  uint32_t end_block = blocks_of(w.range().col_end);
  pl.local_blocks = end_block - pl.first_block;
  pl.nodes = canonical_pieces(n_blocks, pl.first_block, end_block);
  for (const auto& n : pl.nodes) {
    pl.first.push_back(n.first - pl.first_block);
    pl.end.push_back(std::min(n.first + n.count, n_blocks) - pl.first_block);
  }
  return pl;
}

// Rows [r0, r1) of a matmul over the shard's blocks: per (token, row) the
// block partials by the rule, reduced into each piece in canonical order;
// `store(t, r, q, value)` puts piece q of (t, r) where it belongs. The one
// implementation behind matmul and matmul_pieces.
template <class Store>
void pieces_rows(const matmul_args& a, const piece_layout& pl, uint32_t r0,
                 uint32_t r1, Store&& store) {
  const tensor_view& w = a.w;
  std::vector<float> tmp(w.type() == dtype::f32 ? 0 : w.cols());
  partial_buffer p{pl.local_blocks};
  // Only a reduction's last block may be short (and only if the shard
  // reaches the tensor's end).
  bool full_blocks = (uint64_t{pl.first_block} + pl.local_blocks) * B <=
                     uint64_t{pl.full_cols};
  size_t n_pieces = pl.nodes.size();
  for (uint32_t r = r0; r < r1; ++r) {
    const float* wr = row_f32(w, r, tmp);
    for (uint32_t t = 0; t < a.tokens; ++t) {
      const float* xt = a.x + size_t{t} * a.ldx;
      if (full_blocks) {
        for (uint32_t i = 0; i < pl.local_blocks; ++i)
          p.data()[i] = full_block_dot(wr + i * B, xt + i * B);
      } else {
        for (uint32_t i = 0; i < pl.local_blocks; ++i) {
          uint32_t global_first = (pl.first_block + i) * B;
          uint32_t len = std::min(B, pl.full_cols - global_first);
          p.data()[i] = any_block_dot(wr + i * B, xt + i * B, len);
        }
      }
      for (size_t q = 0; q < n_pieces; ++q)
        store(t, r, q,
              tree_reduce_in_place(
                  p.span().subspan(pl.first[q], pl.end[q] - pl.first[q])));
    }
  }
}

// Below this many weight bytes, waking threads costs more than it saves.
constexpr size_t parallel_min_bytes = size_t{1} << 20;

// Runs body(r0, r1) over the shard's rows, split over the pool when worth it.
template <class Body>
void split_rows(const matmul_args& a, Body&& body) {
  uint32_t rows = a.w.rows();
  if (a.pool == nullptr || a.pool->size() == 1 ||
      a.w.bytes().size() < parallel_min_bytes) {
    body(0u, rows);
    return;
  }
  // A few chunks per thread balance load on a shared machine.
  unsigned chunks = a.pool->size() * 4;
  a.pool->run(chunks, [&](unsigned c) {
    body(static_cast<uint32_t>(uint64_t{rows} * c / chunks),
         static_cast<uint32_t>(uint64_t{rows} * (c + 1) / chunks));
  });
}

} // namespace

void matmul(const matmul_args& a, float* y, uint32_t ldy) {
  assert(a.w.cols() == a.w.full_shape().cols);
  auto pl = layout_of(a.w);
  split_rows(a, [&](uint32_t r0, uint32_t r1) {
    pieces_rows(a, pl, r0, r1, [&](uint32_t t, uint32_t r, size_t, float v) {
      y[size_t{t} * ldy + r] = v;
    });
  });
}

std::vector<tree_node> shard_pieces(const tensor_view& w) {
  return layout_of(w).nodes;
}

void matmul_pieces(const matmul_args& a, const piece_output& out) {
  auto pl = layout_of(a.w);
  size_t n_pieces = pl.nodes.size();
  split_rows(a, [&](uint32_t r0, uint32_t r1) {
    // Rows of one call stay inside slices: find the slice of r0 once and
    // walk forward.
    size_t j = 0;
    while (out.cuts[j + 1] <= r0)
      ++j;
    for (uint32_t r = r0; r < r1;) {
      uint32_t slice_end = std::min(r1, out.cuts[j + 1]);
      uint32_t first = out.cuts[j];
      uint32_t width = out.cuts[j + 1] - first;
      float* dst = out.dst[j];
      pieces_rows(a, pl, r, slice_end,
                  [&](uint32_t t, uint32_t row, size_t q, float v) {
                    dst[(size_t{t} * width + (row - first)) * n_pieces + q] =
                        v;
                  });
      r = slice_end;
      ++j;
    }
  });
}

void rms_norm(const float* x, const float* w, uint32_t n, float eps,
              float* out) {
  float mean = dot(x, x, n) / static_cast<float>(n);
  // sqrt and division are correctly rounded IEEE operations: deterministic.
  float inv = 1.0f / std::sqrt(mean + eps);
  for (uint32_t i = 0; i < n; ++i)
    out[i] = (x[i] * inv) * w[i];
}

rope_table::rope_table(uint32_t head_dim, double theta, uint32_t max_positions)
    : half_(head_dim / 2)
    , positions_(max_positions)
    , cos_(size_t{max_positions} * half_)
    , sin_(size_t{max_positions} * half_) {
  double log_theta = det::log(theta);
  std::vector<double> inv_freq(half_);
  for (uint32_t i = 0; i < half_; ++i)
    inv_freq[i] = det::exp(-(2.0 * i / head_dim) * log_theta);
  for (uint32_t p = 0; p < max_positions; ++p)
    for (uint32_t i = 0; i < half_; ++i) {
      double angle = static_cast<double>(p) * inv_freq[i];
      cos_[size_t{p} * half_ + i] = static_cast<float>(det::cos(angle));
      sin_[size_t{p} * half_ + i] = static_cast<float>(det::sin(angle));
    }
}

void rope_table::apply(float* x, uint32_t n_heads, uint32_t position) const {
  const float* c = cos_.data() + size_t{position} * half_;
  const float* s = sin_.data() + size_t{position} * half_;
  for (uint32_t h = 0; h < n_heads; ++h) {
    float* v = x + size_t{h} * half_ * 2;
    for (uint32_t i = 0; i < half_; ++i) {
      float x0 = v[2 * i];
      float x1 = v[2 * i + 1];
      v[2 * i] = x0 * c[i] - x1 * s[i];
      v[2 * i + 1] = x0 * s[i] + x1 * c[i];
    }
  }
}

void attention_head(const float* q, const float* k, const float* v,
                    uint32_t n_pos, uint32_t stride, uint32_t head_dim,
                    float scale, float* out, float* scratch) {
  float* scores = scratch;
  uint32_t nb = blocks_of(n_pos);
  float* part = scores + n_pos;              // [nb][head_dim]
  float* acc = part + size_t{nb} * head_dim; // [8][head_dim]
  for (uint32_t t = 0; t < n_pos; ++t)
    scores[t] = dot(q, k + size_t{t} * stride, head_dim) * scale;
  float m = scores[0];
  for (uint32_t t = 1; t < n_pos; ++t)
    m = std::max(m, scores[t]); // max is exact: order does not matter
  for (uint32_t t = 0; t < n_pos; ++t)
    scores[t] = det::expf(scores[t] - m);
  float denom = sum(scores, n_pos);
  for (uint32_t t = 0; t < n_pos; ++t)
    scores[t] = scores[t] / denom;
  // Weighted sum over positions: the rule along t, vectorised along d.
  for (uint32_t b = 0; b < nb; ++b) {
    std::fill(acc, acc + size_t{L} * head_dim, 0.0f);
    uint32_t len = std::min(B, n_pos - b * B);
    for (uint32_t j = 0; j < len; ++j) {
      uint32_t t = b * B + j;
      float pt = scores[t];
      const float* vt = v + size_t{t} * stride;
      float* lane = acc + size_t{j % L} * head_dim;
      for (uint32_t d = 0; d < head_dim; ++d)
        lane[d] += pt * vt[d];
    }
    float* pb = part + size_t{b} * head_dim;
    for (uint32_t d = 0; d < head_dim; ++d) {
      float lanes[L];
      for (uint32_t l = 0; l < L; ++l)
        lanes[l] = acc[size_t{l} * head_dim + d];
      pb[d] = combine_lanes(lanes);
    }
  }
  for (uint32_t s = 1; s < nb; s <<= 1)
    for (uint32_t i = 0; i + s < nb; i += 2 * s) {
      float* dst = part + size_t{i} * head_dim;
      const float* src = part + size_t{i + s} * head_dim;
      for (uint32_t d = 0; d < head_dim; ++d)
        dst[d] = dst[d] + src[d];
    }
  std::memcpy(out, part, size_t{head_dim} * sizeof(float));
}

void swiglu(const float* gate, const float* up, uint32_t n, float* out) {
  for (uint32_t i = 0; i < n; ++i) {
    float g = gate[i];
    float silu = g / (1.0f + det::expf(-g));
    out[i] = silu * up[i];
  }
}

} // namespace lockstep::model
