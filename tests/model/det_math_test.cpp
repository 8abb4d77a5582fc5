#include "model/det_math.hpp"
#include "model/tensor.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>

namespace lockstep::model {
namespace {

TEST(det_math, exp_matches_libm_closely) {
  for (double x = -700.0; x < 700.0; x += 0.737)
    EXPECT_NEAR(det::exp(x) / std::exp(x), 1.0, 1e-14) << x;
  EXPECT_EQ(det::exp(0.0), 1.0);
  EXPECT_EQ(det::exp(-800.0), 0.0);
  EXPECT_TRUE(std::isinf(det::exp(800.0)));
}

TEST(det_math, log_matches_libm_closely) {
  for (double x = 1e-300; x < 1e300; x *= 3.7)
    EXPECT_NEAR(det::log(x), std::log(x), 1e-13 * std::abs(std::log(x)) + 1e-15)
        << x;
  EXPECT_NEAR(det::log(500000.0), std::log(500000.0), 1e-13);
}

TEST(det_math, sin_cos_match_libm_closely) {
  for (double x = -9000.0; x < 9000.0; x += 0.913) {
    EXPECT_NEAR(det::sin(x), std::sin(x), 1e-12) << x;
    EXPECT_NEAR(det::cos(x), std::cos(x), 1e-12) << x;
  }
}

TEST(half_precision, f16_known_values_and_rounding) {
  EXPECT_EQ(f32_to_f16_bits(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16_bits(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16_bits(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16_bits(1e6f), 0x7C00);          // overflow to inf
  EXPECT_EQ(f32_to_f16_bits(5.9604645e-8f), 0x0001); // smallest subnormal
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(f32_to_f16_bits(1.0f + 0x1p-11f), 0x3C00);
  EXPECT_EQ(f32_to_f16_bits(1.0f + 3 * 0x1p-11f), 0x3C02);
  for (uint32_t h = 0; h < 0x7C00; ++h) // every finite positive half
    EXPECT_EQ(f32_to_f16_bits(f16_bits_to_f32(static_cast<uint16_t>(h))), h);
}

TEST(half_precision, bf16_round_to_nearest_even) {
  EXPECT_EQ(f32_to_bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(bf16_bits_to_f32(0x3F80), 1.0f);
  float halfway = std::bit_cast<float>(0x3F808000u); // tie: keep even 0x3F80
  EXPECT_EQ(f32_to_bf16_bits(halfway), 0x3F80);
  float above = std::bit_cast<float>(0x3F808001u);
  EXPECT_EQ(f32_to_bf16_bits(above), 0x3F81);
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(
      f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

} // namespace
} // namespace lockstep::model
