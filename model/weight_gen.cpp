#include "model/weight_gen.hpp"

#include <cmath>
#include <cstring>

namespace lockstep::model {

uint64_t mix64(uint64_t key, uint64_t counter) {
  // SplitMix64's finaliser applied to key ^ golden-ratio-spaced counter:
  // a bijection of the counter for each key, statistically strong enough for
  // synthetic weights and sampling, and trivially parallel.
  uint64_t z = key ^ (counter * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float uniform_pm1(uint64_t bits) {
  // 24 random bits -> k / 2^23 - 1, exact in binary32.
  auto k = static_cast<int32_t>(bits >> 40);
  return static_cast<float>(k) * 0x1p-23f - 1.0f;
}

namespace {

uint64_t tensor_key(uint64_t seed, tensor_id id) {
  return mix64(mix64(seed, 0x6c6f636b73746570ull), // "lockstep"
               (uint64_t{id.layer} << 8) | static_cast<uint64_t>(id.kind));
}

// Per-row amplitude; the sqrt is IEEE-exact, so the value is reproducible.
float row_amplitude(uint64_t key, uint32_t row, uint32_t cols) {
  float u = (uniform_pm1(mix64(~key, row)) + 1.0f) * 0.5f; // [0, 1)
  return std::sqrt(3.0f / static_cast<float>(cols)) * (0.75f + 0.5f * u);
}

} // namespace

weight_generator::weight_generator(model_spec spec, uint64_t seed)
    : spec_(std::move(spec))
    , seed_(seed) {}

caf::expected<tensor> weight_generator::generate(tensor_id id,
                                                 const shard_range& r) const {
  auto shape = shape_of(spec_, id.kind);
  if (auto err = check_shard(shape, r))
    return err;
  auto type = dtype_of(spec_, id.kind);
  tensor t{shape, type, r};
  uint64_t key = tensor_key(seed_, id);
  bool embedding = id.kind == tensor_kind::tok_embedding;
  bool norm = is_norm(id.kind);
  for (uint32_t row = r.row_begin; row < r.row_end; ++row) {
    uint32_t lr = row - r.row_begin;
    float amp = embedding || norm ? 1.0f : row_amplitude(key, row, shape.cols);
    auto* out = t.row(lr).data();
    uint64_t base = uint64_t{row} * shape.cols;
    if (type == dtype::int8) {
      t.scales()[lr] = amp / 127.0f;
      for (uint32_t c = r.col_begin; c < r.col_end; ++c) {
        // q uniform in [-127, 127]: 255 values from the top bits.
        auto q =
            static_cast<int32_t>((mix64(key, base + c) >> 32) % 255u) - 127;
        reinterpret_cast<int8_t*>(out)[c - r.col_begin] =
            static_cast<int8_t>(q);
      }
      continue;
    }
    for (uint32_t c = r.col_begin; c < r.col_end; ++c) {
      float u = uniform_pm1(mix64(key, base + c));
      float v = norm ? 1.0f + 0.1f * u : amp * u;
      uint32_t lc = c - r.col_begin;
      switch (type) {
      case dtype::f32:
        std::memcpy(out + size_t{lc} * 4, &v, 4);
        break;
      case dtype::f16:
        reinterpret_cast<uint16_t*>(out)[lc] = f32_to_f16_bits(v);
        break;
      case dtype::bf16:
        reinterpret_cast<uint16_t*>(out)[lc] = f32_to_bf16_bits(v);
        break;
      case dtype::int8:
        break;
      }
    }
  }
  return t;
}

tensor weight_generator::generate(tensor_id id) const {
  return *generate(id, whole(shape_of(spec_, id.kind)));
}

} // namespace lockstep::model
