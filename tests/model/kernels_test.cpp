#include "model/kernels.hpp"
#include "model/weight_gen.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

namespace lockstep::model {

// Readable names for parameterised tests.
inline void PrintTo(dtype t, std::ostream* os) {
  *os << to_string(t);
}

namespace {

std::vector<float> random_vec(size_t n, uint64_t key) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = uniform_pm1(mix64(key, i));
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

model_spec spec_with(dtype t) {
  auto s = *find_preset("tiny-8");
  s.weight_dtype = t;
  return s;
}

// y = W x in double from the dequantised weights: the tolerance reference.
std::vector<double> naive_matmul(const tensor& w, const std::vector<float>& x,
                                 uint32_t tokens) {
  std::vector<double> y(size_t{tokens} * w.rows());
  std::vector<float> row(w.cols());
  for (uint32_t r = 0; r < w.rows(); ++r) {
    w.to_f32(r, 0, w.cols(), row.data());
    for (uint32_t t = 0; t < tokens; ++t) {
      double acc = 0;
      for (uint32_t k = 0; k < w.cols(); ++k)
        acc += double{row[k]} * x[size_t{t} * w.cols() + k];
      y[size_t{t} * w.rows() + r] = acc;
    }
  }
  return y;
}

class kernels_by_dtype : public ::testing::TestWithParam<dtype> {};

TEST_P(kernels_by_dtype, matmul_matches_double_precision) {
  weight_generator gen{spec_with(GetParam()), 7};
  auto w = gen.generate({0, tensor_kind::w_down}); // 256 x 768
  uint32_t tokens = 3;
  auto x = random_vec(size_t{tokens} * w.cols(), 11);
  std::vector<float> y(size_t{tokens} * w.rows());
  matmul({x.data(), tokens, w.cols(), w.view()}, y.data(), w.rows());
  auto ref = naive_matmul(w, x, tokens);
  for (size_t i = 0; i < y.size(); ++i)
    EXPECT_NEAR(y[i], ref[i], 1e-5 * (1.0 + std::abs(ref[i]))) << i;
}

// The headline property: whole == split, bit for bit, in every dimension.
TEST_P(kernels_by_dtype,
       splits_by_tokens_rows_and_reduction_are_bit_identical) {
  weight_generator gen{spec_with(GetParam()), 3};
  tensor_id id{1, tensor_kind::w_down}; // 256 rows x 768 cols = 12 blocks
  auto w = gen.generate(id);
  const uint32_t tokens = 8;
  const uint32_t rows = w.rows(), cols = w.cols();
  auto x = random_vec(size_t{tokens} * cols, 5);
  std::vector<float> whole_y(size_t{tokens} * rows);
  matmul({x.data(), tokens, cols, w.view()}, whole_y.data(), rows);

  for (uint32_t ways : {1u, 2u, 3u, 8u}) {
    // By tokens.
    std::vector<float> y(whole_y.size());
    for (uint32_t p = 0; p < ways; ++p) {
      uint32_t t0 = tokens * p / ways, t1 = tokens * (p + 1) / ways;
      if (t0 == t1)
        continue;
      matmul({x.data() + size_t{t0} * cols, t1 - t0, cols, w.view()},
             y.data() + size_t{t0} * rows, rows);
    }
    EXPECT_TRUE(same_bits(y, whole_y)) << "tokens, ways=" << ways;

    // By output rows (each part a row shard, as a chip would hold it).
    std::fill(y.begin(), y.end(), 0.0f);
    for (uint32_t p = 0; p < ways; ++p) {
      uint32_t r0 = rows * p / ways, r1 = rows * (p + 1) / ways;
      auto shard = *gen.generate(id, {r0, r1, 0, cols});
      std::vector<float> part(size_t{tokens} * (r1 - r0));
      matmul({x.data(), tokens, cols, shard.view()}, part.data(), r1 - r0);
      for (uint32_t t = 0; t < tokens; ++t)
        for (uint32_t r = r0; r < r1; ++r)
          y[size_t{t} * rows + r] = part[size_t{t} * (r1 - r0) + (r - r0)];
    }
    EXPECT_TRUE(same_bits(y, whole_y)) << "rows, ways=" << ways;

    // Along the reduction dimension, on block boundaries: each part sends its
    // canonical tree nodes; the combine follows the canonical tree.
    uint32_t nb = blocks_of(cols);
    std::vector<std::vector<tree_node>> nodes(ways);
    std::vector<std::vector<float>> values(ways);
    for (uint32_t p = 0; p < ways; ++p) {
      uint32_t b0 = nb * p / ways, b1 = nb * (p + 1) / ways;
      uint32_t c0 = b0 * reduction_block_elems, c1 = b1 * reduction_block_elems;
      auto shard = *gen.generate(id, {0, rows, c0, c1});
      // This part only sees its columns of x.
      std::vector<float> xs(size_t{tokens} * (c1 - c0));
      for (uint32_t t = 0; t < tokens; ++t)
        std::memcpy(xs.data() + size_t{t} * (c1 - c0),
                    x.data() + size_t{t} * cols + c0, (c1 - c0) * 4);
      nodes[p] = shard_pieces(shard.view());
      values[p].resize(size_t{tokens} * rows * nodes[p].size());
      const uint32_t cuts[] = {0, rows};
      float* dst = values[p].data();
      matmul_pieces({xs.data(), tokens, c1 - c0, shard.view()},
                    {cuts, {&dst, 1}});
    }
    for (uint32_t t = 0; t < tokens; ++t)
      for (uint32_t r = 0; r < rows; ++r) {
        std::vector<tree_node> all_nodes;
        std::vector<float> all_values;
        for (uint32_t p = 0; p < ways; ++p)
          for (size_t q = 0; q < nodes[p].size(); ++q) {
            all_nodes.push_back(nodes[p][q]);
            all_values.push_back(
                values[p][(size_t{t} * rows + r) * nodes[p].size() + q]);
          }
        y[size_t{t} * rows + r] = *combine_nodes(nb, all_nodes, all_values);
      }
    EXPECT_TRUE(same_bits(y, whole_y)) << "reduction, ways=" << ways;
  }
}

INSTANTIATE_TEST_SUITE_P(all_dtypes, kernels_by_dtype,
                         ::testing::Values(dtype::f32, dtype::f16, dtype::bf16,
                                           dtype::int8),
                         [](const auto& info) {
                           return std::string{to_string(info.param)};
                         });

TEST(kernels, rms_norm_matches_double_precision) {
  auto x = random_vec(512, 1);
  auto w = random_vec(512, 2);
  std::vector<float> y(512);
  rms_norm(x.data(), w.data(), 512, 1e-5f, y.data());
  double ss = 0;
  for (float v : x)
    ss += double{v} * v;
  double inv = 1.0 / std::sqrt(ss / 512 + 1e-5);
  for (size_t i = 0; i < 512; ++i)
    EXPECT_NEAR(y[i], x[i] * inv * w[i], 1e-5);
}

TEST(kernels, attention_matches_double_precision) {
  const uint32_t hd = 64, n_pos = 150, stride = 128;
  auto q = random_vec(hd, 1);
  auto k = random_vec(size_t{n_pos} * stride, 2);
  auto v = random_vec(size_t{n_pos} * stride, 3);
  std::vector<float> out(hd);
  std::vector<float> scratch(n_pos + (blocks_of(n_pos) + 8) * hd);
  float scale = 0.125f;
  attention_head(q.data(), k.data(), v.data(), n_pos, stride, hd, scale,
                 out.data(), scratch.data());
  std::vector<double> s(n_pos);
  double m = -1e300, z = 0;
  for (uint32_t t = 0; t < n_pos; ++t) {
    double d = 0;
    for (uint32_t i = 0; i < hd; ++i)
      d += double{q[i]} * k[size_t{t} * stride + i];
    s[t] = d * scale;
    m = std::max(m, s[t]);
  }
  for (auto& e : s)
    z += (e = std::exp(e - m));
  for (uint32_t i = 0; i < hd; ++i) {
    double ref = 0;
    for (uint32_t t = 0; t < n_pos; ++t)
      ref += s[t] / z * v[size_t{t} * stride + i];
    EXPECT_NEAR(out[i], ref, 1e-5) << i;
  }
}

TEST(kernels, swiglu_and_rope) {
  std::vector<float> g{-3.0f, -0.5f, 0.0f, 0.5f, 3.0f}, u{1, 2, 3, 4, 5};
  std::vector<float> out(5);
  swiglu(g.data(), u.data(), 5, out.data());
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NEAR(out[i], g[i] / (1 + std::exp(-double{g[i]})) * u[i], 1e-6);

  rope_table rope{64, 10000.0, 32};
  auto x = random_vec(128, 9);
  auto y = x;
  rope.apply(y.data(), 2, 17);
  for (uint32_t h = 0; h < 2; ++h)
    for (uint32_t i = 0; i < 32; ++i) {
      double a = 17.0 * std::pow(10000.0, -2.0 * i / 64);
      double x0 = x[h * 64 + 2 * i], x1 = x[h * 64 + 2 * i + 1];
      EXPECT_NEAR(y[h * 64 + 2 * i], x0 * std::cos(a) - x1 * std::sin(a), 1e-5);
      EXPECT_NEAR(y[h * 64 + 2 * i + 1], x0 * std::sin(a) + x1 * std::cos(a),
                  1e-5);
    }
  rope.apply(x.data(), 2, 0); // position 0 is the identity
  EXPECT_EQ(x, random_vec(128, 9));
}

} // namespace
} // namespace lockstep::model
