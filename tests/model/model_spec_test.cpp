#include "model/model_spec.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace lockstep::model {
namespace {

double rel_err(double a, double b) {
  return std::abs(a - b) / b;
}

TEST(model_spec, published_parameter_counts_within_one_percent) {
  EXPECT_LT(rel_err(find_preset("llama-3-8b")->param_count(), 8.03e9), 0.01);
  EXPECT_LT(rel_err(find_preset("llama-2-70b")->param_count(), 69.0e9), 0.01);
  EXPECT_LT(rel_err(find_preset("llama-3-70b")->param_count(), 70.6e9), 0.01);
  EXPECT_LT(rel_err(find_preset("falcon-180b")->param_count(), 180e9), 0.02);
}

TEST(model_spec, every_preset_validates) {
  for (const auto& name : preset_names()) {
    auto spec = find_preset(name);
    ASSERT_TRUE(spec) << name;
    EXPECT_FALSE(validate(*spec)) << render(validate(*spec));
  }
}

TEST(model_spec, tiny_presets_fit_the_budget) {
  auto tiny8 = find_preset("tiny-8");
  EXPECT_GE(tiny8->param_count(), 1'000'000u);
  EXPECT_LE(tiny8->param_count(), 5'000'000u);
  for (auto name : {"tiny-8", "tiny-64", "tiny-512", "tiny-1500"})
    EXPECT_LT(find_preset(name)->weight_bytes(), 200'000'000u) << name;
  auto big = find_preset("bench-2g");
  EXPECT_GT(big->weight_bytes(), 1.8 * (1u << 30));
  EXPECT_LT(big->weight_bytes(), 2.5 * (1u << 30));
}

TEST(model_spec, weight_bytes_follow_dtype) {
  auto spec = *find_preset("tiny-8");
  auto f32 = spec.weight_bytes();
  spec.weight_dtype = dtype::bf16;
  auto bf16 = spec.weight_bytes();
  spec.weight_dtype = dtype::int8;
  auto i8 = spec.weight_bytes();
  EXPECT_GT(f32, bf16);
  EXPECT_GT(bf16, i8);
  // Norms stay f32; int8 adds one f32 scale per row.
  EXPECT_EQ(tensor_bytes(spec, tensor_kind::wq),
            uint64_t{spec.q_dim()} * spec.d_model + spec.q_dim() * 4);
}

TEST(model_spec, unknown_model_is_a_clear_error) {
  auto spec = find_preset("llama-9000");
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error(), errc::unknown_model);
  EXPECT_NE(render(spec.error()).find("llama-9000"), std::string::npos);
  EXPECT_EQ(lockstep::kind_of(spec.error()), error_kind::invalid_input);
}

TEST(model_spec, validation_names_the_field) {
  auto spec = *find_preset("tiny-8");
  spec.d_ff = 100;
  auto err = validate(spec);
  ASSERT_TRUE(err);
  EXPECT_NE(render(err).find("d_ff"), std::string::npos) << render(err);
  spec = *find_preset("tiny-8");
  spec.n_kv_heads = 3;
  EXPECT_NE(render(validate(spec)).find("n_kv_heads"), std::string::npos);
}

TEST(model_spec, tensor_ids_round_trip) {
  auto spec = *find_preset("tiny-8");
  auto all = all_tensors(spec);
  EXPECT_EQ(all.size(), 3u + 9u * spec.n_layers);
  for (const auto& id : all) {
    auto parsed = parse_tensor_id(to_string(id));
    ASSERT_TRUE(parsed) << to_string(id);
    EXPECT_EQ(*parsed, id);
  }
  EXPECT_FALSE(parse_tensor_id("l3.lm_head"));
  EXPECT_FALSE(parse_tensor_id("wq"));
  EXPECT_FALSE(parse_tensor_id("lx.wq"));
}

} // namespace
} // namespace lockstep::model
